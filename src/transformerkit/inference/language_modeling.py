"""Generating text with a language model — the decoder-only Transformer or the recurrent one — (:class:`TextGenerator`: batched prompts,
key/value cache, sampling, stop strings, streaming), the same on a CTranslate2 export
(:class:`CTranslate2Generator`), their loaders and the ``generate`` verb."""

from __future__ import annotations

import queue
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from transformerkit.backends.calibration import (choose_inference_dtype, quantize_int8_where_fastest,
                                                 use_decoding_layout_where_faster)
from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError, read_lines
from transformerkit.data.tokenizer import SubwordTokenizer, check_unicode
from transformerkit.devices import model_device, pick_device
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.decoders import CausalLanguageModel, CausalLMDecoder
from transformerkit.generation.interrupt import check_interrupt
from transformerkit.generation.sampling import TokenChooser, generate_tokens
from transformerkit.inference.engines import load_ctranslate2_export
from transformerkit.models.decoder_only import DecoderOnlyTransformer

CONTEXT_LIMIT = 4096
"""Prompt + output tokens of one generation, at most, for a model without learned positions
(sinusoidal, rotary; a recurrent model): the bound on its work (a Transformer's key/value cache
and attention grow with it, a recurrent model's time)."""


def _settled(text: str, stops: list[str]) -> str:
    """The part of a growing text that can be shown now: without a trailing partial character
    (U+FFFD while a multi-byte character is incomplete) or a tail that may begin a stop string."""
    text = text.rstrip("\ufffd")
    held = max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
    return text[:len(text) - held]


class Continuations:
    """Tokens in, one step at a time, → each row's new text since the step before. EOS ends a
    row; a stop string cuts its text and ends it; text that may still become a stop string or a
    multi-byte character is held back until it is settled (what every backend streams)."""

    def __init__(self, tokenizer: SubwordTokenizer, stops: list[str], rows: int) -> None:
        self.tokenizer, self.stops = tokenizer, stops
        self.generated: list[list[int]] = [[] for _ in range(rows)]
        self.emitted = [""] * rows
        self.ended = [False] * rows

    def add(self, tokens: list[int | None]) -> list[str]:
        """One token per row (None: none for that row this step) → each row's new text."""
        pieces = []
        for row, token in enumerate(tokens):
            if self.ended[row] or token is None:
                pieces.append("")
                continue
            if token == self.tokenizer.eos_id:
                self.ended[row] = True
            else:
                self.generated[row].append(token)
            text = self.tokenizer.decode([self.generated[row]])[0]
            cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
            if cut >= 0:
                text, self.ended[row] = text[:cut], True
            if not self.ended[row]:
                text = _settled(text, self.stops)
            pieces.append(text[len(self.emitted[row]):])
            self.emitted[row] = text
        return pieces

    def rest(self) -> list[str] | None:
        """At the end: what was held back of the rows that did not end (they reached the length
        limit), or None when nothing was."""
        final = [text if self.ended[row] else self.tokenizer.decode([self.generated[row]])[0]
                 for row, text in enumerate(self.emitted)]
        return [f[len(e):] for f, e in zip(final, self.emitted)] if final != self.emitted else None

    @property
    def finish_reasons(self) -> list[str]:
        """Why each row ended: ``stop`` (EOS or a stop string) or ``length``, as OpenAI's API names them."""
        return ["stop" if end else "length" for end in self.ended]


class StreamsText:
    """What every generator shares: :meth:`generate` as the sum of :meth:`stream`'s pieces, and
    the end of a stream (its finish reasons, the text held back)."""

    finish_reasons: list[str]

    def stream(self, texts: list[str]) -> Iterator[list[str]]:
        raise NotImplementedError

    def generate(self, texts: list[str]) -> list[str]:
        """The continuation of each prompt (without the prompt)."""
        outputs = [""] * len(texts)
        for pieces in self.stream(texts):
            outputs = [o + p for o, p in zip(outputs, pieces)]
        return outputs

    def _ended(self, text: Continuations) -> Iterator[list[str]]:
        """At the end of a stream: why each row ended, and what was held back of rows that reached
        the length limit."""
        self.finish_reasons = text.finish_reasons
        rest = text.rest()
        if rest is not None:
            yield rest


@dataclass
class TextGenerator(StreamsText):
    """Prompts in, continuations out: left-padded batches, a key/value cache, sampling, stop strings."""

    model: CausalLanguageModel
    tokenizer: SubwordTokenizer
    generation: GenerationConfig
    finish_reasons: list[str] = field(default_factory=list, init=False)
    """After a :meth:`stream` has ended, why each row ended: ``stop`` (EOS or a stop string) or
    ``length`` (``max_new_tokens``), as OpenAI's API names them."""

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def _prompts(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Left-padded ids (batch, longest) and their mask; an empty prompt starts from BOS."""
        ids = prompt_ids(self.tokenizer, texts)
        width = max(len(row) for row in ids)
        padded = torch.tensor([[self.tokenizer.pad_id] * (width - len(row)) + row for row in ids], device=self.device)
        mask = torch.tensor([[False] * (width - len(row)) + [True] * len(row) for row in ids], device=self.device)
        return padded, mask

    @torch.inference_mode()
    def stream(self, texts: list[str]) -> Iterator[list[str]]:
        """Yield, after every step, each prompt's new text since the previous step
        (:class:`Continuations`: stop strings, held-back text)."""
        g = self.generation
        prompts, mask = self._prompts(texts)
        learned = getattr(self.model.config, "positional", None) == "learned"  # a recurrent model has no table
        limit = self.model.config.max_positions if learned else CONTEXT_LIMIT
        max_new = min(g.max_new_tokens, limit - prompts.shape[1])
        if max_new <= 0:
            where = f"max_positions={limit}" if learned else f"the limit of {limit} tokens"
            raise ValueError(f"the prompt ({prompts.shape[1]} tokens) leaves no room in {where}")
        if max_new < g.max_new_tokens:
            where = f"the model's {limit} learned positions" if learned else f"the limit of {limit} tokens"
            warnings.warn(f"generating {max_new} tokens, not {g.max_new_tokens}: prompt + output must fit {where}",
                          stacklevel=2)
        rows = len(texts)
        decoder = CausalLMDecoder(self.model, mask, capacity=prompts.shape[1] + max_new)
        seen = torch.zeros(rows, self.model.config.vocab_size, dtype=torch.bool, device=self.device)
        seen.scatter_(1, prompts.masked_fill(~mask, 0), mask)
        text = Continuations(self.tokenizer, g.stop, rows)
        stop_now = torch.zeros(rows, dtype=torch.bool, device=self.device)

        def stopped(_: Tensor) -> Tensor:
            return stop_now

        for token in generate_tokens(decoder, prompts, max_new, TokenChooser(g, self.device), self.tokenizer.eos_id,
                                     self.tokenizer.pad_id, seen, stopped):
            ended = sum(text.ended)
            pieces = text.add(token.tolist())
            if sum(text.ended) != ended:  # a row ended this step (EOS or a stop string): tell the loop
                stop_now.copy_(torch.tensor(text.ended))
            yield pieces
        yield from self._ended(text)


def prompt_ids(tokenizer: SubwordTokenizer, texts: list[str]) -> list[list[int]]:
    """The ids of each prompt; an empty prompt starts from BOS."""
    return [row or [tokenizer.bos_id] for row in tokenizer.encode(texts)]


@dataclass
class CTranslate2Generator(StreamsText):
    """A CTranslate2 export of a language model (``transformerkit export --format ctranslate2``)
    with :class:`TextGenerator`'s contract: the same prompts (an empty one starts from BOS), the
    same settings (greedy, or sampling with temperature, top-k — 0: all tokens —, top-p, the CTRL
    repetition penalty, a seed, stop strings) and the same texts, streamed a step at a time.
    CTranslate2 decodes in its own threads and reports every token to a callback, which
    :meth:`stream` hands on; prompts of different lengths run as one batch per length, one batch
    after the other. Its random numbers are not PyTorch's: a seeded sample repeats itself, but is
    not TextGenerator's sample."""

    engine: Any
    """A ``ctranslate2.Generator``."""
    tokenizer: SubwordTokenizer
    generation: GenerationConfig
    finish_reasons: list[str] = field(default_factory=list, init=False)

    def stream(self, texts: list[str]) -> Iterator[list[str]]:
        import ctranslate2

        g = self.generation
        prompts = [self.tokenizer.tokens(row) for row in prompt_ids(self.tokenizer, texts)]
        text = Continuations(self.tokenizer, g.stop, len(texts))
        tokens: queue.Queue[tuple[tuple[int, int], int, int] | BaseException | None] = queue.Queue()
        closing = threading.Event()
        # one batch per prompt length: CTranslate2 reads a batch's shortest prompt at once and the
        # rest of longer ones token by token, which changes what it reports and when
        by_length: dict[int, list[int]] = {}
        for row, prompt in enumerate(prompts):
            by_length.setdefault(len(prompt), []).append(row)
        groups = [rows for _, rows in sorted(by_length.items())]

        def decode() -> None:
            try:
                if g.do_sample and g.seed is not None:
                    ctranslate2.set_random_seed(g.seed)
                for number, rows in enumerate(groups):
                    def on_token(step: Any, number: int = number, rows: list[int] = rows) -> bool:
                        row = rows[step.batch_id]
                        tokens.put(((number, step.step), row, step.token_id))
                        return closing.is_set() or text.ended[row]  # True: stop decoding that row

                    if closing.is_set():
                        break
                    self.engine.generate_batch(
                        [prompts[row] for row in rows], max_length=g.max_new_tokens, include_prompt_in_result=False,
                        callback=on_token, end_token=self.tokenizer.tokens([self.tokenizer.eos_id]),
                        return_end_token=True, repetition_penalty=g.repetition_penalty,
                        sampling_topk=g.top_k if g.do_sample else 1, sampling_topp=g.top_p if g.do_sample else 1.0,
                        sampling_temperature=g.temperature if g.do_sample else 1.0)
                tokens.put(None)
            except BaseException as error:  # handed to the reader, raised there
                tokens.put(error)

        worker = threading.Thread(target=decode, daemon=True)
        worker.start()
        try:
            step: list[int | None] = [None] * len(texts)
            current = (0, 0)  # (batch, step) of the tokens gathered in ``step``
            while (item := tokens.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                check_interrupt()  # a server's timeout or shutdown (generation.interrupt)
                when, row, token = item
                if when != current and any(t is not None for t in step):
                    yield text.add(step)
                    step = [None] * len(texts)
                current, step[row] = when, token
            if any(t is not None for t in step):
                yield text.add(step)
        finally:
            closing.set()
            worker.join()
        yield from self._ended(text)


def load_generator(model_dir: str | Path, device: str | None = None,
                   dtype: Literal["auto", "fp32", "bf16", "int8"] = "fp32", **overrides: Any) -> TextGenerator:
    """A :class:`TextGenerator` for a model directory; ``overrides`` change its generation defaults.

    ``dtype="bf16"`` casts the weights to bfloat16: half the bytes to read per token, an
    approximation (measured in BENCHMARKS.md: 99.2 % of next-token argmaxes unchanged).
    ``"int8"`` quantizes the linear layers (CPU; :mod:`transformerkit.backends.quantization`).
    ``"auto"`` (the CLI's default) takes bf16 where the CPU multiplies bf16 in hardware and this
    model's decoding products measure faster in it
    (:func:`~transformerkit.backends.calibration.choose_inference_dtype`), else fp32.
    """
    device = pick_device(device)
    if dtype == "int8" and torch.device(device).type != "cpu":
        raise UsageError("--dtype int8 decodes on the CPU (PyTorch's dynamic quantization): add --device cpu")
    model, tokenizer, generation = load_model_dir(model_dir, device)
    if not isinstance(model, CausalLanguageModel) or not isinstance(tokenizer, SubwordTokenizer):
        kind = "an image generation" if isinstance(model, DecoderOnlyTransformer) else f"a {model.model_type}"
        raise CheckpointError(f"{model_dir} holds {kind} model, not a language model")
    if dtype == "int8":
        quantize_int8_where_fastest(model, rows=(1,))
    elif dtype == "bf16" or (dtype == "auto" and choose_inference_dtype(model, rows=(1,)).use):
        model.to(torch.bfloat16)  # attention: `auto` measures the fp32 upcast against bf16 (nn.attention_kernels)
    if dtype != "int8":
        use_decoding_layout_where_faster(model, rows=(1,))  # one prompt (generate), a few (serve)
    generation = replace(generation, **{k: v for k, v in overrides.items() if v is not None})
    generation.validate()
    return TextGenerator(model, tokenizer, generation)


def load_ctranslate2_generator(directory: str | Path, **overrides: Any) -> CTranslate2Generator:
    """A :class:`CTranslate2Generator` for an exported directory; ``overrides`` change its generation defaults."""
    export = load_ctranslate2_export(directory, "Generator")
    generation = replace(export.generation, **{k: v for k, v in overrides.items() if v is not None})
    generation.validate()
    return CTranslate2Generator(export.engine, export.tokenizer, generation)


def add_commands(commands: Commands) -> None:
    """``generate``: continue a prompt, streaming the text as it is decoded."""
    command = commands.add_parser("generate", help="continue a prompt with a language model, streaming")
    command.add_argument("--model", required=True, help="model directory")
    command.add_argument("--prompt", default=None,
                         help="text to continue; - or none given with a pipe on standard input: read it from there "
                              "(default: start from BOS)")
    command.add_argument("--max-new-tokens", type=int, default=None,
                         help="tokens to generate at most (default: the model's)")
    mode = command.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="always take the most probable token")
    mode.add_argument("--sample", action="store_true", help="sample (default: the model's generation config)")
    command.add_argument("--temperature", type=float, default=None,
                         help="divides the logits before sampling (default: the model's)")
    command.add_argument("--top-k", type=int, default=None, help="keep the k most probable tokens (0: all)")
    command.add_argument("--top-p", type=float, default=None, help="nucleus: keep the top tokens up to this mass")
    command.add_argument("--repetition-penalty", type=float, default=None, help="CTRL penalty θ (1: none)")
    command.add_argument("--stop", action="append", default=[], help="end at this string (repeatable)")
    command.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    command.add_argument("--dtype", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                         help="bf16: weights in bfloat16, faster and approximate (see BENCHMARKS.md); int8: linear "
                              "layers dynamically quantized; auto (default): bf16 where the CPU has bf16 hardware "
                              "and it measures faster, else fp32")
    command.add_argument("--backend", choices=["transformerkit", "ctranslate2"], default="transformerkit",
                         help="ctranslate2: --model is an export of transformerkit export --format ctranslate2")
    command.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: CUDA if available)")
    command.set_defaults(handler=generate_command)


def prompt_of(given: str | None) -> str:
    """``--prompt``'s text: as given; ``-``: standard input; not given: standard input when it is
    piped or redirected (as Unix filters read), else empty."""
    if given is not None and given != "-":
        return given
    if given is None and (sys.stdin is None or sys.stdin.isatty()):
        return ""
    try:
        return "\n".join(read_lines(None))
    except OSError:  # no readable standard input (closed, or captured by a test runner)
        if given == "-":
            raise UsageError("--prompt -: standard input cannot be read") from None
        return ""


def generate_command(args: Any) -> int:
    args.prompt = prompt_of(args.prompt)
    check_unicode([args.prompt])  # before it is echoed: invalid UTF-8 from the shell is one line, not a traceback
    do_sample = False if args.greedy else (True if args.sample else None)
    settings = dict(max_new_tokens=args.max_new_tokens, do_sample=do_sample, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                    stop=args.stop or None, seed=args.seed)
    generator: TextGenerator | CTranslate2Generator
    if args.backend == "ctranslate2":
        if args.dtype != "auto" or args.device not in (None, "cpu"):
            raise UsageError("--dtype and --device apply to --backend transformerkit (a CTranslate2 export is "
                             "quantized by transformerkit export --quantize and decodes on the CPU here)")
        generator = load_ctranslate2_generator(args.model, **settings)
    else:
        generator = load_generator(args.model, device=args.device, dtype=args.dtype, **settings)
    sys.stdout.write(args.prompt)
    for pieces in generator.stream([args.prompt]):
        sys.stdout.write(pieces[0])
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
