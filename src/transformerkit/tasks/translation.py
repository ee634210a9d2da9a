"""Training an encoder-decoder on parallel text (:class:`TranslationTask`), for translation or
summarization; using it (``Translator``, BLEU/chrF, ROUGE) is :mod:`transformerkit.inference.translation`."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.config import EncoderDecoderConfig
from transformerkit.data.batching import TranslationBatch, TranslationExample, collate, token_batches
from transformerkit.data.parallel import ParallelCorpus, load_parallel
from transformerkit.data.tokenizer import SPECIAL_TOKENS, SubwordTokenizer
from transformerkit.inference.translation import Translator, evaluate_model, output_scores
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer, warm_started_from_encoder
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.families import model_class_for
from transformerkit.models.rnn import RNNConfig, RNNEncoderDecoder
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


def new_model(run: TranslationRun, tokenizer: SubwordTokenizer) -> EncoderDecoderTransformer | RNNEncoderDecoder:
    """The model a run starts from: fresh from ``run.model`` (a Transformer or the recurrent
    baseline), or warm-started from ``data.init_from``."""
    if run.data.init_from is None:
        config = model_config_for(run.model, tokenizer, tgt_vocab_size=None)
        return model_class_for(config)(config)  # type: ignore[return-value]
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
        load_split(run, "test")  # read now: a missing or malformed test file stops the run before training
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
class TranslationRun(RunConfig[TranslationData]):
    """A translation run, or a summarization run: (document, summary) pairs as (source, target)."""

    data: TranslationData = field(default_factory=TranslationData)
    model: EncoderDecoderConfig | RNNConfig = field(default_factory=EncoderDecoderConfig)
    task_class = TranslationTask
