"""Text in, text out with an encoder-decoder (:class:`Translator`), its loader, BLEU/chrF,
cross-attention and its heatmap, and the ``translate`` and ``summarize`` verbs. Summarization
runs through the same classes (``GenerationConfig.task = "summarization"``) and is scored with
ROUGE (:mod:`.summarization`)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import sacrebleu
import torch
from torch import Tensor

from transformerkit.backends.calibration import quantize_int8_where_fastest, use_decoding_layout_where_faster
from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError, counted, read_lines, refuse_overwriting_input, write_lines
from transformerkit.data.batching import batch_by_size, pad
from transformerkit.data.parallel import load_parallel
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.devices import model_device, pick_device
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.decoders import Seq2SeqModel
from transformerkit.generation.interrupt import check_interrupt
from transformerkit.generation.search import greedy_decode, translate_ids
from transformerkit.inference import model_task
from transformerkit.inference.engines import load_ctranslate2_export
from transformerkit.inference.summarization import rouge_scores

SOURCE_LIMIT = 1024
"""The most source tokens a translation reads where the model sets no smaller limit (sinusoidal or
rotary positions, no ``max_source_tokens``): BART's and GPT-2's context. It bounds the work of any
one input (self-attention is quadratic in its length; the output may run to source length +
``max_length_offset`` tokens)."""


class ReadsSources:
    """What every translator shares: its sources as token ids + EOS within the model's bounds, and
    lines in → translations out, in order, each as soon as it and every line before it are done
    (blank lines stay blank). A class using it has a ``tokenizer``, a ``generation``, a
    :attr:`source_bound` and :meth:`_batches`."""

    tokenizer: SubwordTokenizer
    generation: GenerationConfig

    def _batches(self, texts: list[str]) -> Iterator[tuple[list[int], list[str]]]:
        """(indices into ``texts``, their translations) per batch, batches in any order."""
        raise NotImplementedError

    def stream(self, texts: list[str]) -> Iterator[str]:
        """The translation of each text in the order of ``texts``, each yielded once it and all
        before it are done (batches run shortest first); a blank line stays blank."""
        nonblank = [i for i, text in enumerate(texts) if text.strip()]
        done: dict[int, str] = {}
        following = 0  # the next line to yield

        def ready() -> Iterator[str]:
            nonlocal following
            while following < len(texts) and (following in done or not texts[following].strip()):
                yield done.pop(following, "")
                following += 1

        yield from ready()  # leading blank lines
        for indices, translations in self._batches([texts[i] for i in nonblank]):
            done.update((nonblank[i], translation) for i, translation in zip(indices, translations, strict=True))
            yield from ready()

    def translate(self, texts: list[str]) -> list[str]:
        """Translations in the order of ``texts``; a blank line stays blank."""
        return list(self.stream(texts))

    @property
    def source_bound(self) -> int:
        """The most source tokens the model may read (:data:`SOURCE_LIMIT` unless it ends sooner)."""
        return SOURCE_LIMIT

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        """Token ids + EOS, each source cut to ``generation.max_source_tokens`` (what the model was
        trained to read: a document's opening) and to :attr:`source_bound`; a warning says how
        many sources the bound cut."""
        ids = self.tokenizer.encode(texts)
        cut = self.cut_by_bound(ids)
        if cut:
            warnings.warn(f"{len(cut)} of {len(texts)} inputs were longer than the model's limit of "
                          f"{self.source_bound} tokens and were cut to it", stacklevel=2)
        wanted = self.generation.max_source_tokens
        limit = self.source_bound if wanted is None else min(wanted, self.source_bound)
        return [row[:limit] + [self.tokenizer.eos_id] for row in ids]

    def cut_by_bound(self, ids: list[list[int]]) -> list[int]:
        """Indices of the token sequences that :attr:`source_bound` cuts (not those that the model's
        own ``max_source_tokens`` cuts first, by design)."""
        wanted = self.generation.max_source_tokens
        if wanted is not None and wanted <= self.source_bound:
            return []
        return [i for i, row in enumerate(ids) if len(row) > self.source_bound]


@dataclass
class Translator(ReadsSources):
    model: Seq2SeqModel
    """An encoder-decoder: the Transformer, or the recurrent baseline."""
    tokenizer: SubwordTokenizer
    generation: GenerationConfig
    batch_tokens: int = 2000
    """The decoding batch budget: padded source tokens × beam per batch."""

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def source_bound(self) -> int:
        """:data:`SOURCE_LIMIT`, or fewer where learned positions end sooner (one is EOS's)."""
        if getattr(self.model.config, "positional", None) == "learned":  # a recurrent model has no table
            return min(SOURCE_LIMIT, self.model.config.max_positions - 1)
        return SOURCE_LIMIT

    def translate_batches(self, texts: list[str]) -> Iterator[tuple[list[int], list[list[int]]]]:
        """(indices into ``texts``, output ids) per batch, batches sorted by source length."""
        sources = self.encode_sources(texts)
        beam = max(1, self.generation.beam)
        for indices in batch_by_size([len(s) for s in sources], max(self.batch_tokens // beam, 1), seed=0, epoch=0,
                                     shuffle=False):
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

    def _batches(self, texts: list[str]) -> Iterator[tuple[list[int], list[str]]]:
        for indices, ids in self.translate_batches(texts):
            yield indices, self.tokenizer.decode(ids)


def with_decoding_changes(generation: GenerationConfig, beam: int | None, length_penalty: float | None
                          ) -> GenerationConfig:
    """``generation`` with the beam size and length penalty given (None: keep), validated."""
    if beam is not None:
        generation = replace(generation, beam=beam)
    if length_penalty is not None:
        generation = replace(generation, length_penalty=length_penalty)
    generation.validate()
    return generation


def load_translator(model_dir: str | Path, beam: int | None = None, length_penalty: float | None = None,
                    device: str | None = None, dtype: Literal["fp32", "int8"] = "fp32") -> Translator:
    """A :class:`Translator` for a model directory, with its decoding defaults unless overridden;
    ``dtype="int8"`` quantizes its linear layers (CPU; :mod:`transformerkit.backends.quantization`)."""
    device = pick_device(device)
    if dtype == "int8" and torch.device(device).type != "cpu":
        raise UsageError("--dtype int8 decodes on the CPU (PyTorch's dynamic quantization): add --device cpu")
    model, tokenizer, generation = load_model_dir(model_dir, device)
    if not isinstance(model, Seq2SeqModel):
        raise CheckpointError(f"{model_dir} holds a {model.model_type} model, not a translation model")
    generation = with_decoding_changes(generation, beam, length_penalty)
    if dtype == "int8":
        quantize_int8_where_fastest(model, rows=(8 * max(1, generation.beam),))
    else:
        use_decoding_layout_where_faster(model, rows=(8 * max(1, generation.beam),))  # batches of sentences × beams
    return Translator(model, tokenizer, generation)


@dataclass
class CTranslate2Translator(ReadsSources):
    """A CTranslate2 export (``transformerkit export --format ctranslate2``) with the
    :class:`Translator` contract: lines in, translations out, blank lines blank, the same sources
    (:class:`ReadsSources`). The output limit is the longest source of a batch +
    ``max_length_offset`` (CTranslate2 takes one limit per batch); CTranslate2 applies the length
    penalty α as length^α, we as GNMT's."""

    engine: Any
    """A ``ctranslate2.Translator``."""
    tokenizer: SubwordTokenizer
    generation: GenerationConfig
    batch_size: int = 32
    """Sentences handed to CTranslate2 per call (each yields its translations at once)."""
    batch_tokens: int | None = None
    """CTranslate2's own batch budget inside a call, in source tokens (None: the whole call)."""

    def _batches(self, texts: list[str]) -> Iterator[tuple[list[int], list[str]]]:
        ids = self.encode_sources(texts)
        g = self.generation
        for start in range(0, len(ids), self.batch_size):
            check_interrupt()  # a server's timeout or shutdown stops between batches (generation.interrupt)
            chunk = ids[start:start + self.batch_size]
            results = self.engine.translate_batch(
                [self.tokenizer.tokens(row) for row in chunk], beam_size=g.beam, length_penalty=g.length_penalty,
                max_input_length=0,  # sources are bounded above (its default would cut them at 1,024)
                min_decoding_length=0,  # as ours, EOS may come first (its default forbids an empty output)
                **({"max_batch_size": self.batch_tokens, "batch_type": "tokens"} if self.batch_tokens else {}),
                max_decoding_length=min(max(map(len, chunk)) + g.max_length_offset, g.max_length or 1 << 30))
            yield list(range(start, start + len(chunk))), self.tokenizer.decode(
                [[self.tokenizer.tokenizer.token_to_id(t) for t in r.hypotheses[0]] for r in results])


def load_ctranslate2_translator(directory: str | Path, beam: int | None = None,
                                length_penalty: float | None = None) -> CTranslate2Translator:
    """A :class:`CTranslate2Translator` for an exported directory, with its decoding defaults
    (``generation_config.json``, written by the export) unless overridden."""
    export = load_ctranslate2_export(directory, "Translator")
    return CTranslate2Translator(export.engine, export.tokenizer,
                                 with_decoding_changes(export.generation, beam, length_penalty))


def evaluate_model(model_dir: str | Path, data: str | Path, data_target: str | Path | None = None,
                   source_field: str = "source", target_field: str = "target", beam: int | None = None,
                   hypotheses_out: str | Path | None = None) -> dict[str, float]:
    """Translate (or summarize) a test set with a model directory and score it: {"bleu", "chrf",
    "bleu_tokenizer", …} for translation, {"rouge1", "rouge2", "rougeL", …} for summarization."""
    translator = load_translator(model_dir, beam=beam)
    corpus = load_parallel(data, data_target, source_field, target_field)
    if not corpus.pairs:
        raise ValueError(f"{data}: no test pairs (empty file, or every line blank or one-sided)")
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
                    layer: int = -1, head: int | None = None) -> tuple[Tensor, list[str], list[str]]:
    """Cross-attention of one decoder layer (``layer``: an index, negative from the last), of one
    ``head`` or averaged over heads (None), for a given translation.

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
    heads = weights[0].float()
    chosen = heads.mean(0) if head is None else heads[head]
    return chosen.cpu(), tokenizer.tokens(src_ids), tokenizer.tokens(tgt_ids)


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


def add_commands(commands: Commands) -> None:
    """``translate`` and ``summarize``: lines in, lines out."""
    for name, task, description in (
            ("translate", "translation", "translate lines (stdin → stdout)"),
            ("summarize", "summarization", "summarize documents, one per line (stdin → stdout)")):
        command = commands.add_parser(name, help=description)
        command.add_argument("--model", required=True, help=f"{task} model directory")
        command.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the model's)")
        command.add_argument("--length-penalty", type=float, default=None, help="α of ((5+|Y|)/6)^α")
        command.add_argument("--input", default=None, help="read this file instead of stdin (-: stdin)")
        command.add_argument("--output", "--out", dest="output", default=None,
                             help="write this file instead of stdout (lines are written, in input order, as they "
                                  "are done; a progress bar on stderr when it is a terminal)")
        command.add_argument("--batch-tokens", type=int, default=None,
                             help="decoding batch budget: padded source tokens × beam per batch (default: 2000; "
                                  "CTranslate2: source tokens per batch, its batch_type='tokens')")
        command.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: CUDA if available)")
        command.add_argument("--dtype", choices=["fp32", "int8"], default="fp32",
                             help="int8: linear layers dynamically quantized (faster on a CPU, slightly less accurate)")
        command.add_argument("--backend", choices=["transformerkit", "ctranslate2"], default="transformerkit",
                             help="ctranslate2: --model is an export of transformerkit export --format ctranslate2")
        command.set_defaults(handler=translate_command, task=task)


def translate_command(args: Any) -> int:
    refuse_overwriting_input(args.input, args.output)
    if args.batch_tokens is not None and args.batch_tokens < 1:
        raise UsageError(f"--batch-tokens must be positive, got {args.batch_tokens}")
    translator: Translator | CTranslate2Translator
    if args.backend == "ctranslate2":
        if args.dtype != "fp32":
            raise UsageError("--dtype applies to --backend transformerkit (a CTranslate2 export is quantized by "
                             "transformerkit export --quantize)")
        if args.device not in (None, "cpu"):
            raise UsageError("--backend ctranslate2 decodes on the CPU here (drop --device)")
        translator = load_ctranslate2_translator(args.model, beam=args.beam, length_penalty=args.length_penalty)
        if args.batch_tokens is not None:
            translator = replace(translator, batch_tokens=args.batch_tokens)
    else:
        task = model_task(args.model)
        if task != args.task:
            raise UsageError(f"{args.model} is a {task} model, not a {args.task} model")
        translator = load_translator(args.model, beam=args.beam, length_penalty=args.length_penalty,
                                     device=args.device, dtype=args.dtype)
        if args.batch_tokens is not None:
            translator = replace(translator, batch_tokens=args.batch_tokens)
    lines = read_lines(args.input)
    write_lines(counted(translator.stream(lines), len(lines)), args.output)
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
