"""Extractive question answering with an encoder-only model (BERT's SQuAD recipe, Devlin et al., 2019 §4.2).

Input:   [CLS] question [SEP] context window [SEP]      token types 0 … 0 1 … 1
Output:  start, end = span head logits (batch, seq) each; the answer is the context span (s, e)
         maximizing start[s] + end[e] with s ≤ e < s + max_answer_tokens, both inside the context.
Loss:    (CE(start, s*) + CE(end, e*)) / 2 per window; a window without the answer points at [CLS].
         With ``data.every_occurrence``, s* and e* range over every occurrence of the answer in the
         window: (−log Σ_{s∈S} p_start(s) − log Σ_{e∈E} p_end(e)) / 2, the likelihood of pointing at
         any of them (the Attention Sum Reader's, Kadlec et al., 2016), where a cloze answer occurs
         several times and no occurrence is more right than another.

Contexts longer than the model's input are cut into overlapping windows (``stride`` tokens shared
by consecutive windows, as Hugging Face's ``run_qa.py`` does); a question's answer is the best span
over all its windows.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError, read_lines
from transformerkit.data.batching import EncoderBatch, batch_by_size, pad_right
from transformerkit.data.squad import QAExample, load_squad, squad_scores
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.devices import model_device, pick_device
from transformerkit.models.encoder_only import EncoderOnlyTransformer


@dataclass
class Window:
    """One model input: a question with one window of its context."""

    example: int
    """Index of the question in its split."""
    ids: list[int]
    """[CLS] question [SEP] context tokens [SEP]."""
    context_start: int
    """Position of the first context token in ``ids``."""
    offsets: list[tuple[int, int]]
    """Character span in the context of each context token."""
    spans: list[tuple[int, int]] = field(default_factory=list)
    """Token positions (first, last) in ``ids`` of each of the question's answers wholly inside
    the window, in the order of the answers."""

    @property
    def start(self) -> int:
        """Where the first answer in the window starts (0: [CLS], the answer is not in this window)."""
        return self.spans[0][0] if self.spans else 0

    @property
    def end(self) -> int:
        return self.spans[0][1] if self.spans else 0

    def span_characters(self, start: int, end: int) -> tuple[int, int]:
        """Where token positions ``start`` to ``end`` (inclusive) of ``ids`` lie in the context:
        (first character, one past the last)."""
        return self.offsets[start - self.context_start][0], self.offsets[end - self.context_start][1]

    def span_text(self, context: str, start: int, end: int) -> str:
        """The context's text from token position ``start`` to ``end`` (inclusive) of ``ids``."""
        first, last = self.span_characters(start, end)
        return context[first:last]


def windows(tokenizer: SubwordTokenizer, examples: list[QAExample], max_length: int, stride: int,
            max_question_tokens: int = 64) -> list[Window]:
    """Every question's context cut into windows of at most ``max_length`` tokens in all, consecutive
    windows sharing ``stride`` context tokens, each with the question's answers that lie wholly
    inside it."""
    questions = tokenizer.tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    contexts = tokenizer.tokenizer.encode_batch([e.context for e in examples], add_special_tokens=False)
    found = []
    for index, (example, question, context) in enumerate(zip(examples, questions, contexts)):
        if not context.ids:
            raise ValueError(f"question {example.id!r}: the context is empty")
        q = question.ids[:max_question_tokens]
        room = max_length - len(q) - 3
        if room <= stride:
            raise ValueError(f"max_length {max_length} leaves {room} context tokens per window after a "
                             f"{len(q)}-token question: not more than the stride ({stride})")
        first = 0
        while True:
            last = min(first + room, len(context.ids))
            offsets = context.offsets[first:last]
            window = Window(index, [tokenizer.bos_id, *q, tokenizer.eos_id, *context.ids[first:last], tokenizer.eos_id],
                            len(q) + 2, offsets)
            for answer in example.answers:
                begin, finish = answer.start, answer.start + len(answer.text)
                inside = [i for i, (a, b) in enumerate(offsets) if a < finish and b > begin]
                if inside and offsets[0][0] <= begin and offsets[-1][1] >= finish:
                    span = (window.context_start + inside[0], window.context_start + inside[-1])
                    if span not in window.spans:
                        window.spans.append(span)
            found.append(window)
            if last == len(context.ids):
                break
            first = last - stride
    return found


def best_spans(start: Tensor, end: Tensor, context_mask: Tensor, max_answer_tokens: int) -> tuple[Tensor, Tensor, Tensor]:
    """The best (start, end) per row and its score start[s] + end[e] over s ≤ e < s + max_answer_tokens
    with both positions in the context. start, end, context_mask: (batch, seq) → (batch,) each."""
    scores = start[:, :, None] + end[:, None, :]  # (batch, s, e)
    seq = start.shape[1]
    s, e = torch.arange(seq)[:, None], torch.arange(seq)[None, :]
    allowed = (e >= s) & (e < s + max_answer_tokens)
    allowed = allowed.to(start.device) & context_mask[:, :, None] & context_mask[:, None, :]
    flat = scores.masked_fill(~allowed, float("-inf")).flatten(1)
    best = flat.argmax(dim=1)
    return best // seq, best % seq, flat.gather(1, best[:, None]).squeeze(1)


@dataclass
class SpanBatch(EncoderBatch):
    token_types: Tensor
    starts: Tensor
    ends: Tensor
    """(batch, seq) True where an answer in the window starts / ends ([CLS] alone: no answer)."""
    context_mask: Tensor
    """(batch, seq) True at context tokens (where an answer may start or end)."""


def span_loss(start: Tensor, end: Tensor, batch: SpanBatch, every_occurrence: bool) -> Tensor:
    """The span loss summed over the batch's windows (module docstring): the first answer's
    cross-entropy, or the likelihood of any of them. start, end: (batch, seq) logits."""
    losses = []
    for logits, targets in ((start.float(), batch.starts), (end.float(), batch.ends)):
        if not every_occurrence:
            targets = targets & (targets.cumsum(-1) == 1)  # the first answer only
        losses.append(logits.logsumexp(-1) - logits.masked_fill(~targets, float("-inf")).logsumexp(-1))
    return (losses[0] + losses[1]).sum() / 2


def span_batch(rows: list[Window], pad_id: int, device: torch.device) -> SpanBatch:
    ids, mask = pad_right([w.ids for w in rows], pad_id)
    positions = torch.arange(ids.shape[1])[None, :]
    context_start = torch.tensor([w.context_start for w in rows])[:, None]
    context_end = torch.tensor([w.context_start + len(w.offsets) for w in rows])[:, None]
    token_types = ((positions >= context_start) & mask).long()
    context_mask = (positions >= context_start) & (positions < context_end)
    starts, ends = torch.zeros(ids.shape, dtype=torch.bool), torch.zeros(ids.shape, dtype=torch.bool)
    for row, window in enumerate(rows):
        for first, last in window.spans or [(0, 0)]:
            starts[row, first] = ends[row, last] = True
    return SpanBatch(ids.to(device), mask.to(device), token_types.to(device), starts.to(device), ends.to(device),
                     context_mask.to(device))


@dataclass
class Prediction:
    text: str
    score: float
    """start[s] + end[e]: what ranks the spans of a question's windows."""
    probability: float
    """softmax(start)[s] · softmax(end)[e] over the window's tokens."""
    start: int
    """The answer is ``context[start:end]`` (character offsets)."""
    end: int


@torch.no_grad()
def predict_answers(model: EncoderOnlyTransformer, examples: list[QAExample], rows: list[Window],
                    batches: list[list[int]], pad_id: int, max_answer_tokens: int,
                    autocast: AbstractContextManager[Any],
                    every_occurrence: bool = False) -> tuple[float, dict[str, Prediction]]:
    """The span loss summed over ``rows`` (the windows of ``examples``, in ``batches`` of indices) and
    the best span per question id."""
    device = model_device(model)
    total, best = 0.0, {}
    for indices in batches:
        batch = span_batch([rows[i] for i in indices], pad_id, device)
        with autocast:
            start, end = model.span_logits(batch.ids, batch.mask, batch.token_types)
        start, end = start.float(), end.float()
        total += span_loss(start, end, batch, every_occurrence).item()
        firsts, lasts, scores = best_spans(start, end, batch.context_mask, max_answer_tokens)
        p_start = start.masked_fill(~batch.mask, float("-inf")).softmax(-1)
        p_end = end.masked_fill(~batch.mask, float("-inf")).softmax(-1)
        for row, i in enumerate(indices):
            window, s, e, score = rows[i], int(firsts[row]), int(lasts[row]), float(scores[row])
            example = examples[window.example]
            if example.id not in best or score > best[example.id].score:
                first, last = window.span_characters(s, e)
                best[example.id] = Prediction(example.context[first:last], score,
                                              float(p_start[row, s] * p_end[row, e]), first, last)
    return total, best


def window_batches(rows: list[Window], batch_tokens: int, seed: int = 0, epoch: int = 0,
                   shuffle: bool = False) -> list[list[int]]:
    """Batches of window indices holding at most ``batch_tokens`` padded tokens each."""
    return batch_by_size([len(w.ids) for w in rows], batch_tokens, seed, epoch, shuffle=shuffle)


@dataclass
class QuestionAnswerer:
    model: EncoderOnlyTransformer
    tokenizer: SubwordTokenizer
    max_length: int = 384
    stride: int = 128
    max_answer_tokens: int = 30
    batch_tokens: int = 8192
    """The batch budget: padded tokens per batch."""

    def predict(self, examples: list[QAExample]) -> dict[str, Prediction]:
        """The best answer span of each question's context, by question id."""
        rows = windows(self.tokenizer, examples, self.max_length, self.stride)
        _, predictions = predict_answers(self.model, examples, rows, window_batches(rows, self.batch_tokens),
                                         self.tokenizer.pad_id, self.max_answer_tokens, nullcontext())
        return predictions

    def answer(self, question: str, context: str) -> Prediction:
        return self.answer_all([(question, context)])[0]

    def answer_all(self, questions: list[tuple[str, str]]) -> list[Prediction]:
        """The best span for each (question, context), in order."""
        predictions = self.predict([QAExample(str(i), q, c) for i, (q, c) in enumerate(questions)])
        return [predictions[str(i)] for i in range(len(questions))]


def load_answerer(model_dir: str | Path, device: str | None = None, **options: int) -> QuestionAnswerer:
    device = pick_device(device)
    model, tokenizer, _ = load_model_dir(model_dir, device)
    if not isinstance(model, EncoderOnlyTransformer) or not model.config.span_head:
        raise CheckpointError(f"{model_dir} holds no question-answering model (an encoder with a span head)")
    return QuestionAnswerer(model.eval(), tokenizer, **{"max_length": min(384, model.config.max_positions), **options})


def add_commands(commands: Commands) -> None:
    """``answer``: the best span of a text for one question."""
    command = commands.add_parser("answer", help="answer a question with a span of a text (extractive QA)")
    command.add_argument("--model", required=True, help="question-answering model directory")
    command.add_argument("--question", required=True, help="the question")
    command.add_argument("--context", required=True, help="file holding the text to answer from (- for stdin)")
    command.add_argument("--json", action="store_true", help="print text, score and probability as JSON")
    command.set_defaults(handler=answer_command)


def answer_command(args: Any) -> int:
    if not args.context.strip():
        raise UsageError("--context names the file holding the text (- for standard input), got an empty name")
    context = "\n".join(read_lines(args.context))  # UTF-8 checked, named by file and line
    prediction = load_answerer(args.model).answer(args.question, context)
    print(json.dumps(vars(prediction), ensure_ascii=False) if args.json else prediction.text)
    return 0


def evaluate(args: Any) -> dict[str, Any]:
    """``transformerkit evaluate`` for a QA model: SQuAD v1.1 exact match and F1 on ``--data`` (SQuAD JSON)."""
    examples = load_squad(args.data)
    predictions = load_answerer(args.model).predict(examples)
    return {**squad_scores({i: p.text for i, p in predictions.items()}, examples), "questions": len(examples)}
