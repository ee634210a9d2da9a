"""Translation: training it (:class:`TranslationTask`), text in and text out (:class:`Translator`),
BLEU/chrF, and attention heatmaps. Summarization runs through the same classes
(``GenerationConfig.task = "summarization"``) and is scored with ROUGE (:mod:`.summarization`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import sacrebleu
import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.backends.calibration import use_decoding_layout_where_faster
from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError, read_lines, write_lines
from transformerkit.config import TransformerConfig
from transformerkit.data.batching import TranslationBatch, TranslationExample, collate, pad, token_batches
from transformerkit.data.parallel import ParallelCorpus, load_parallel
from transformerkit.data.tokenizer import SPECIAL_TOKENS, SubwordTokenizer
from transformerkit.devices import model_device, pick_device
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.search import greedy_decode, translate_ids
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer, warm_started_from_encoder
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.tasks.summarization import rouge_scores
from transformerkit.training.recipe import RunConfig, validate_vocabulary_size
from transformerkit.training.task import model_config_for, run_tokenizer


@dataclass
class TranslationData:
    train: str = ""
    """Training pairs: TSV (``.tsv``/``.tsv.gz``), JSONL, or a source-side text file with ``train_target``."""
    valid: str | None = None
    test: str | None = None
    train_target: str | None = None
    valid_target: str | None = None
    test_target: str | None = None
    source_field: str = "source"
    target_field: str = "target"
    source_lang: str = "en"
    target_lang: str = "de"
    vocab_size: int = 8000
    """Joint BPE vocabulary size, special tokens included."""
    tokenizer: Literal["bpe", "byte-level"] = "bpe"
    """``bpe``: BPE over characters, words marked by ``▁`` and punctuation split off (SentencePiece's
    Metaspace scheme); ``byte-level``: GPT-2's byte-level BPE, punctuation runs merged with their words."""
    max_length: int = 200
    """Training pairs with a side longer than this many tokens are dropped (and counted)."""
    max_source_tokens: int | None = None
    """Sources are cut to their first this many tokens, in training and wherever the model is used
    (saved with it; Hugging Face's ``max_source_length``): a summarizer reads a document's opening.
    None: whole sources."""
    init_from: str | None = None
    """A transformerkit encoder-only model directory (BERT, MiniLM: ``transformerkit convert``) that
    starts both stacks (BERT2BERT, :func:`~transformerkit.models.encoder_decoder.warm_started_from_encoder`):
    its tokenizer replaces ``tokenizer`` and ``vocab_size``, its architecture replaces ``model``
    except ``dropout``, ``attention_dropout`` and ``label_smoothing``. None: a fresh model and a vocabulary learned on ``train``."""

    def validate(self, run: RunConfig[Any]) -> None:
        validate_vocabulary_size(self.vocab_size)
        if self.max_source_tokens is not None and self.max_source_tokens < 1:
            raise ValueError(f"data.max_source_tokens must be at least 1 or null, got {self.max_source_tokens}")


def load_split(run: TranslationRun, split: str) -> ParallelCorpus | None:
    path = getattr(run.data, split)
    if path is None:
        return None
    return load_parallel(path, getattr(run.data, f"{split}_target"), run.data.source_field, run.data.target_field)


def learn_tokenizer(data: TranslationData, texts: list[str]) -> SubwordTokenizer:
    """The joint source-target vocabulary of ``data.tokenizer``'s kind, learned on ``texts``."""
    if data.tokenizer == "byte-level":
        return SubwordTokenizer.train_byte_level(texts, data.vocab_size, special_tokens=SPECIAL_TOKENS,
                                                 prefix_space=True)
    return SubwordTokenizer.train(texts, data.vocab_size)


def encode_examples(tokenizer: SubwordTokenizer, corpus: ParallelCorpus,
                    max_source_tokens: int | None = None) -> list[TranslationExample]:
    """Token-id pairs, each source cut to its first ``max_source_tokens`` tokens (None: whole)."""
    return [TranslationExample(s[:max_source_tokens], t)
            for s, t in zip(tokenizer.encode(corpus.sources), tokenizer.encode(corpus.targets))]


def new_model(run: TranslationRun, tokenizer: SubwordTokenizer) -> EncoderDecoderTransformer:
    """The model a run starts from: fresh from ``run.model``, or warm-started from ``data.init_from``."""
    if run.data.init_from is None:
        return EncoderDecoderTransformer(model_config_for(run.model, tokenizer))
    pretrained, _, _ = load_model_dir(run.data.init_from)
    if not isinstance(pretrained, EncoderOnlyTransformer):
        raise CheckpointError(f"{run.data.init_from} holds a {pretrained.model_type} model, not an encoder-only model")
    if pretrained.config.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(f"{run.data.init_from}: its tokenizer has {tokenizer.vocab_size} tokens, "
                              f"its model {pretrained.config.vocab_size}")
    m = run.model
    return warm_started_from_encoder(pretrained, dropout=m.dropout, attention_dropout=m.attention_dropout,
                                     label_smoothing=m.label_smoothing, pad_id=tokenizer.pad_id,
                                     bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)


class TranslationTask:
    """Parallel text → joint BPE → encoder-decoder; label-smoothed loss; validation loss, ppl, and
    greedy BLEU/chrF (translation) or ROUGE (summarization) on a sample of the validation pairs."""

    def __init__(self, run: TranslationRun, out: Path, resume: bool, device: torch.device) -> None:
        self.run, self.device = run, device
        train = load_split(run, "train")
        assert train is not None
        self.valid_corpus = load_split(run, "valid")
        init_from = run.data.init_from
        self.tokenizer = run_tokenizer(out, resume, lambda: SubwordTokenizer.from_directory(init_from) if init_from
                                       else learn_tokenizer(run.data, train.sources + train.targets))
        cut = run.data.max_source_tokens
        examples = encode_examples(self.tokenizer, train, cut)
        self.train_examples = [e for e in examples if 0 < max(len(e.source), len(e.target)) <= run.data.max_length]
        self.data_report = {"train_pairs": len(train.pairs), "skipped_empty": train.skipped_empty,
                            "dropped_too_long": len(examples) - len(self.train_examples)}
        self.valid_examples = encode_examples(self.tokenizer, self.valid_corpus, cut) if self.valid_corpus else []
        if self.valid_corpus is not None and not self.valid_examples:
            raise ValueError(f"{run.data.valid}: no validation pairs (empty file, or every line blank or one-sided)")
        self.has_validation = bool(self.valid_examples)
        self.model = new_model(run, self.tokenizer).to(device)
        self.generation = replace(run.decoding, source_lang=run.data.source_lang, target_lang=run.data.target_lang,
                                  task=run.task, max_source_tokens=cut)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return token_batches(self.train_examples, self.run.training.max_tokens, self.run.training.seed, epoch)

    def _collate(self, examples: list[TranslationExample]) -> TranslationBatch:
        t = self.tokenizer
        return collate(examples, t.pad_id, t.bos_id, t.eos_id).to(self.device)

    def prepare(self, batch: list[int]) -> TranslationBatch:
        return self._collate([self.train_examples[i] for i in batch])

    def loss(self, batch: TranslationBatch) -> Tensor:
        return self.model.loss(batch.src, batch.tgt_in, batch.tgt_out, reduction="sum")

    @torch.no_grad()
    def validate(self, autocast: AbstractContextManager[Any]) -> dict[str, Any]:
        """Validation loss (label-smoothed, as in training), NLL per token, perplexity, greedy BLEU."""
        pad_id = self.tokenizer.pad_id
        smoothed = nll = tokens = 0.0
        for indices in token_batches(self.valid_examples, self.run.training.max_tokens, 0, 0, shuffle=False):
            batch = self._collate([self.valid_examples[i] for i in indices])
            with autocast:
                logits = self.model(batch.src, batch.tgt_in).float().flatten(0, 1)
            target = batch.tgt_out.flatten()
            smoothed += F.cross_entropy(logits, target, ignore_index=pad_id, reduction="sum",
                                        label_smoothing=self.model.config.label_smoothing).item()
            nll += F.cross_entropy(logits, target, ignore_index=pad_id, reduction="sum").item()
            tokens += int((target != pad_id).sum())
        result: dict[str, Any] = {"valid_loss": smoothed / tokens, "valid_nll": nll / tokens,
                                  "valid_ppl": math.exp(min(nll / tokens, 50.0))}
        n = self.run.training.valid_bleu_sentences
        if n and self.valid_corpus is not None:
            pairs = self.valid_corpus.pairs[::max(1, len(self.valid_corpus.pairs) // n)][:n]  # spread over the file
            translator = Translator(self.model, self.tokenizer, replace(self.generation, beam=1))
            with autocast:
                hypotheses = translator.translate([s for s, _ in pairs])
            scores = output_scores(hypotheses, [t for _, t in pairs], self.generation)
            result |= {f"valid_{name}": value for name, value in scores.items() if not isinstance(value, str)}
        return result

    def test_scores(self, model_dir: Path, autocast: AbstractContextManager[Any]) -> dict[str, Any] | None:
        """BLEU/chrF (ROUGE) of the final model's beam search on ``data.test``; None without a test file."""
        d = self.run.data
        if d.test is None:
            return None
        return evaluate_model(model_dir, d.test, d.test_target, d.source_field, d.target_field)


@dataclass
class Translator:
    model: EncoderDecoderTransformer
    tokenizer: SubwordTokenizer
    generation: GenerationConfig
    max_tokens: int = 2000
    """Source tokens × beam per decoding batch."""

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        """Token ids + EOS, cut to ``generation.max_source_tokens`` and to what learned positions allow."""
        limits = [self.generation.max_source_tokens]
        if self.model.config.positional == "learned":
            limits.append(self.model.config.max_positions - 1)
        limit = min((n for n in limits if n is not None), default=None)
        return [ids[:limit] + [self.tokenizer.eos_id] for ids in self.tokenizer.encode(texts)]

    def translate_batches(self, texts: list[str]) -> Iterator[tuple[list[int], list[list[int]]]]:
        """(indices into ``texts``, output ids) per batch, batches sorted by source length."""
        sources = self.encode_sources(texts)
        examples = [TranslationExample(s, []) for s in sources]
        beam = max(1, self.generation.beam)
        for indices in token_batches(examples, max(self.max_tokens // beam, 1), seed=0, epoch=0, shuffle=False):
            src = pad([sources[i] for i in indices], self.tokenizer.pad_id).to(self.device)
            yield indices, self._decode(src)

    def _decode(self, src: Tensor) -> list[list[int]]:
        g = self.generation
        with torch.inference_mode():
            if g.beam == 1:  # greedy: same result as beam 1, without the bookkeeping
                out = greedy_decode(self.model, src, g.max_length_offset, g.max_length)
                return [row[:row.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in row else row
                        for row in out.tolist()]
            return [h.tokens for h in translate_ids(self.model, src, g.beam, g.length_penalty, g.max_length_offset,
                                                    g.max_length)]

    def translate(self, texts: list[str]) -> list[str]:
        """Translations in the order of ``texts``; a blank line stays blank."""
        outputs: list[str] = [""] * len(texts)
        nonblank = [i for i, text in enumerate(texts) if text.strip()]
        for indices, ids in self.translate_batches([texts[i] for i in nonblank]):
            for i, text in zip(indices, self.tokenizer.decode(ids)):
                outputs[nonblank[i]] = text
        return outputs


def load_translator(model_dir: str | Path, beam: int | None = None, length_penalty: float | None = None,
                    device: str | None = None) -> Translator:
    """A :class:`Translator` for a model directory, with its decoding defaults unless overridden."""
    device = pick_device(device)
    model, tokenizer, generation = load_model_dir(model_dir, device)
    if not isinstance(model, EncoderDecoderTransformer):
        raise CheckpointError(f"{model_dir} holds a {model.model_type} model, not a translation model")
    if beam is not None:
        if beam < 1:
            raise ValueError(f"beam must be at least 1, got {beam}")
        generation = replace(generation, beam=beam)
    use_decoding_layout_where_faster(model, rows=(8 * max(1, generation.beam),))  # batches of sentences × beams
    if length_penalty is not None:
        generation = replace(generation, length_penalty=length_penalty)
    return Translator(model, tokenizer, generation)


def evaluate_model(model_dir: str | Path, data: str | Path, data_target: str | Path | None = None,
                   source_field: str = "source", target_field: str = "target", beam: int | None = None,
                   hypotheses_out: str | Path | None = None) -> dict[str, float]:
    """Translate (or summarize) a test set with a model directory and score it: {"bleu", "chrf",
    "bleu_tokenizer", …} for translation, {"rouge1", "rouge2", "rougeL", …} for summarization."""
    translator = load_translator(model_dir, beam=beam)
    corpus = load_parallel(data, data_target, source_field, target_field)
    started = time.perf_counter()
    hypotheses = translator.translate(corpus.sources)
    seconds = time.perf_counter() - started
    if hypotheses_out is not None:
        Path(hypotheses_out).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    return {**output_scores(hypotheses, corpus.targets, translator.generation), "sentences": len(hypotheses),
            "beam": translator.generation.beam, "sentences_per_second": round(len(hypotheses) / seconds, 2)}


def output_scores(hypotheses: list[str], references: list[str], generation: GenerationConfig) -> dict[str, Any]:
    """The scores of the model's task: BLEU and chrF (with the BLEU tokenizer's name) or ROUGE-1/2/L."""
    if generation.task == "summarization":
        return rouge_scores(hypotheses, references)
    return {**score(hypotheses, references, generation.target_lang),
            "bleu_tokenizer": bleu_tokenizer(generation.target_lang)}


def bleu_tokenizer(target_language: str) -> str:
    """sacreBLEU's tokenizer for the target language (``zh`` for Chinese, ``13a`` otherwise)."""
    return "zh" if target_language.lower().startswith("zh") else "13a"


def score(hypotheses: list[str], references: list[str], target_language: str) -> dict[str, float]:
    """Corpus BLEU and chrF with sacreBLEU."""
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=bleu_tokenizer(target_language))
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2)}


def cross_attention(translator: Translator, source: str, translation: str,
                    layer: int = -1) -> tuple[Tensor, list[str], list[str]]:
    """Cross-attention of one decoder layer, averaged over heads, for a given translation.

    The source is encoded as for translating it (:meth:`Translator.encode_sources`: the same cut
    to ``max_source_tokens``), and the translation is fed back teacher-forced with ``need_weights``
    (the reference kernel), so this works for any translation whichever kernel produced it.
    → weights (tgt_len, src_len) — each row sums to 1 —, source tokens, output tokens (EOS included).
    """
    model, tokenizer = translator.model, translator.tokenizer
    src_ids = translator.encode_sources([source])[0]
    tgt_ids = tokenizer.encode([translation])[0] + [tokenizer.eos_id]
    src = torch.tensor([src_ids], device=translator.device)
    tgt_in = torch.tensor([[tokenizer.bos_id] + tgt_ids[:-1]], device=translator.device)
    with torch.inference_mode():
        src_mask = model.source_mask(src)
        memory, _ = model.encode(src, src_mask)
        _, attention = model.decode(tgt_in, memory, src_mask, need_weights=True)
    weights = attention[layer].cross_attention
    assert weights is not None
    return weights[0].float().mean(0).cpu(), tokenizer.tokens(src_ids), tokenizer.tokens(tgt_ids)


def attention_heatmap(translator: Translator, source: str, translation: str, path: str | Path,
                      layer: int = -1) -> Path:
    """Draw :func:`cross_attention` of one translation as a PNG heatmap (matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights, src_tokens, tgt_tokens = cross_attention(translator, source, translation, layer)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(src_tokens) + 2), max(3, 0.4 * len(tgt_tokens) + 1.5)))
    image = ax.imshow(weights.numpy(), cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(tgt_tokens)), tgt_tokens, fontsize=8)
    ax.set_xlabel("source token")
    ax.set_ylabel("output token")
    layers = translator.model.config.num_decoder_layers
    ax.set_title(f"cross-attention, decoder layer {layer % layers + 1} of {layers}, mean over heads", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def serves(model_class: type, config: TransformerConfig, directory: Path) -> bool:
    """Whether a model directory is this module's: an encoder-decoder (translation or summarization)."""
    return model_class is EncoderDecoderTransformer


def add_commands(commands: Commands) -> None:
    """``translate`` and ``summarize``: lines in, lines out."""
    for name, task, description in (
            ("translate", "translation", "translate lines (stdin → stdout)"),
            ("summarize", "summarization", "summarize documents, one per line (stdin → stdout)")):
        command = commands.add_parser(name, help=description)
        command.add_argument("--model", required=True, help=f"{task} model directory")
        command.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the model's)")
        command.add_argument("--length-penalty", type=float, default=None, help="α of ((5+|Y|)/6)^α")
        command.add_argument("--input", default=None, help="read this file instead of stdin")
        command.add_argument("--output", default=None, help="write this file instead of stdout")
        command.set_defaults(handler=translate_command, task=task)


def translate_command(args: Any) -> int:
    translator = load_translator(args.model, beam=args.beam, length_penalty=args.length_penalty)
    if translator.generation.task != args.task:
        raise UsageError(f"{args.model} is a {translator.generation.task} model, not a {args.task} model")
    write_lines(translator.translate(read_lines(args.input)), args.output)
    return 0


def evaluate(args: Any) -> dict[str, Any]:
    """``transformerkit evaluate`` for a translation or summarization model: BLEU/chrF or ROUGE."""
    return evaluate_model(args.model, args.data, args.data_target, args.source_field, args.target_field,
                          beam=args.beam, hypotheses_out=args.hypotheses)


def plot_attention(args: Any) -> str:
    """``transformerkit plot-attention --text``: the cross-attention heatmap of one translation."""
    if args.text is None:
        raise UsageError(f"{args.model} is a text model: give --text")
    translator = load_translator(args.model, beam=args.beam)
    translation = args.translation if args.translation is not None else translator.translate([args.text])[0]
    path = attention_heatmap(translator, args.text, translation, args.out)
    print(f"{args.text}\t{translation}")
    return f"attention heatmap written to {path}"


@dataclass
class TranslationRun(RunConfig[TranslationData]):
    """A translation run, or a summarization run: (document, summary) pairs as (source, target)."""

    data: TranslationData = field(default_factory=TranslationData)
    task_class = TranslationTask
