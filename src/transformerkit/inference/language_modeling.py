"""Generating text with a decoder-only language model (:class:`TextGenerator`: batched prompts,
key/value cache, sampling, stop strings, streaming), its loader and the ``generate`` verb."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from transformerkit.backends.calibration import choose_inference_dtype, use_decoding_layout_where_faster
from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands
from transformerkit.data.tokenizer import SubwordTokenizer, check_unicode
from transformerkit.devices import model_device, pick_device
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.decoders import CausalLMDecoder
from transformerkit.generation.sampling import TokenChooser, generate_tokens
from transformerkit.models.decoder_only import DecoderOnlyTransformer


CONTEXT_LIMIT = 4096
"""Prompt + output tokens of one generation, at most, for a model without learned positions
(sinusoidal, rotary): the bound on its work (its key/value cache and attention grow with it)."""


def _settled(text: str, stops: list[str]) -> str:
    """The part of a growing text that can be shown now: without a trailing partial character
    (U+FFFD while a multi-byte character is incomplete) or a tail that may begin a stop string."""
    text = text.rstrip("\ufffd")
    held = max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
    return text[:len(text) - held]


@dataclass
class TextGenerator:
    """Prompts in, continuations out: left-padded batches, a key/value cache, sampling, stop strings."""

    model: DecoderOnlyTransformer
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
        ids = [row or [self.tokenizer.bos_id] for row in self.tokenizer.encode(texts)]
        width = max(len(row) for row in ids)
        padded = torch.tensor([[self.tokenizer.pad_id] * (width - len(row)) + row for row in ids], device=self.device)
        mask = torch.tensor([[False] * (width - len(row)) + [True] * len(row) for row in ids], device=self.device)
        return padded, mask

    @torch.inference_mode()
    def stream(self, texts: list[str]) -> Iterator[list[str]]:
        """Yield, after every step, each prompt's new text since the previous step. Stop strings cut
        the text and end that row; text that may still become a stop string or a multi-byte
        character is held back until it is settled."""
        g = self.generation
        prompts, mask = self._prompts(texts)
        learned = self.model.config.positional == "learned"
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
        generated: list[list[int]] = [[] for _ in range(rows)]
        emitted = [""] * rows
        ended = [False] * rows
        stop_now = torch.zeros(rows, dtype=torch.bool, device=self.device)

        def stopped(_: Tensor) -> Tensor:
            return stop_now

        for token in generate_tokens(decoder, prompts, max_new, TokenChooser(g, self.device), self.tokenizer.eos_id,
                                     self.tokenizer.pad_id, seen, stopped):
            pieces = []
            for row, t in enumerate(token.tolist()):
                if ended[row]:
                    pieces.append("")
                    continue
                if t == self.tokenizer.eos_id:
                    ended[row] = True
                else:
                    generated[row].append(t)
                text = self.tokenizer.decode([generated[row]])[0]
                cut = min((i for i in (text.find(s) for s in g.stop) if i >= 0), default=-1)
                if cut >= 0:
                    text, ended[row] = text[:cut], True
                    stop_now[row] = True
                if not ended[row]:
                    text = _settled(text, g.stop)
                pieces.append(text[len(emitted[row]):])
                emitted[row] = text
            yield pieces
        self.finish_reasons = ["stop" if end else "length" for end in ended]
        # rows that reached max_new_tokens: release what was held back
        final = [text if ended[row] else self.tokenizer.decode([generated[row]])[0] for row, text in enumerate(emitted)]
        if any(f != e for f, e in zip(final, emitted)):
            yield [f[len(e):] for f, e in zip(final, emitted)]

    def generate(self, texts: list[str]) -> list[str]:
        """The continuation of each prompt (without the prompt)."""
        outputs = [""] * len(texts)
        for pieces in self.stream(texts):
            outputs = [o + p for o, p in zip(outputs, pieces)]
        return outputs


def load_generator(model_dir: str | Path, device: str | None = None,
                   dtype: Literal["auto", "fp32", "bf16"] = "fp32", **overrides: Any) -> TextGenerator:
    """A :class:`TextGenerator` for a model directory; ``overrides`` change its generation defaults.

    ``dtype="bf16"`` casts the weights to bfloat16: half the bytes to read per token, an
    approximation (measured in BENCHMARKS.md: 99.2 % of next-token argmaxes unchanged).
    ``"auto"`` (the CLI's default) takes bf16 where the CPU multiplies bf16 in hardware and this
    model's decoding products measure faster in it
    (:func:`~transformerkit.backends.calibration.choose_inference_dtype`), else fp32.
    """
    device = pick_device(device)
    model, tokenizer, generation = load_model_dir(model_dir, device)
    if not isinstance(model, DecoderOnlyTransformer) or not isinstance(tokenizer, SubwordTokenizer):
        kind = "an image generation" if isinstance(model, DecoderOnlyTransformer) else f"a {model.model_type}"
        raise CheckpointError(f"{model_dir} holds {kind} model, not a language model")
    if dtype == "bf16" or (dtype == "auto" and choose_inference_dtype(model, rows=(1,)).use):
        model.to(torch.bfloat16)
    use_decoding_layout_where_faster(model, rows=(1,))  # one prompt (generate), a few (serve)
    generation = replace(generation, **{k: v for k, v in overrides.items() if v is not None})
    generation.validate()
    return TextGenerator(model, tokenizer, generation)


def add_commands(commands: Commands) -> None:
    """``generate``: continue a prompt, streaming the text as it is decoded."""
    command = commands.add_parser("generate", help="continue a prompt with a language model, streaming")
    command.add_argument("--model", required=True, help="model directory")
    command.add_argument("--prompt", default="", help="text to continue")
    command.add_argument("--max-new-tokens", type=int, default=None)
    mode = command.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="always take the most probable token")
    mode.add_argument("--sample", action="store_true", help="sample (default: the model's generation config)")
    command.add_argument("--temperature", type=float, default=None)
    command.add_argument("--top-k", type=int, default=None, help="keep the k most probable tokens (0: all)")
    command.add_argument("--top-p", type=float, default=None, help="nucleus: keep the top tokens up to this mass")
    command.add_argument("--repetition-penalty", type=float, default=None, help="CTRL penalty θ (1: none)")
    command.add_argument("--stop", action="append", default=[], help="end at this string (repeatable)")
    command.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    command.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                         help="bf16: weights in bfloat16, faster and approximate (see BENCHMARKS.md); auto "
                              "(default): bf16 where the CPU has bf16 hardware and it measures faster, else fp32")
    command.set_defaults(handler=generate_command)


def generate_command(args: Any) -> int:
    check_unicode([args.prompt])  # before it is echoed: invalid UTF-8 from the shell is one line, not a traceback
    do_sample = False if args.greedy else (True if args.sample else None)
    generator = load_generator(args.model, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                               do_sample=do_sample, temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop or None,
                               seed=args.seed)
    sys.stdout.write(args.prompt)
    for pieces in generator.stream([args.prompt]):
        sys.stdout.write(pieces[0])
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
