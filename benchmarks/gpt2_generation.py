"""Greedy generation speed of the GPT-2 124M shape: transformerkit with and without its KV cache,
and Hugging Face ``generate`` (cached) on the same weights, interleaved in one run.

    python benchmarks/gpt2_generation.py [--new-tokens 64] [--prompt 16] [--repeats 3]

Weights are random (no hub access here); speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import interleaved_medians  # noqa: E402

from transformerkit.backends.machine import describe  # noqa: E402
from transformerkit.config import preset  # noqa: E402
from transformerkit.generation.config import GenerationConfig  # noqa: E402
from transformerkit.generation.decoders import CausalLMDecoder  # noqa: E402
from transformerkit.generation.sampling import TokenChooser, generate_tokens  # noqa: E402
from transformerkit.interop.gpt2 import save_hf_gpt2  # noqa: E402
from transformerkit.models.decoder_only import DecoderOnlyTransformer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    ours = DecoderOnlyTransformer(preset("gpt2")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_gpt2(ours, Path(tmp) / "hf")
        theirs = GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").eval()
    greedy = TokenChooser(GenerationConfig())
    print(f"machine: {describe()}")
    print(f"GPT-2 124M shape, fp32, greedy, prompt {args.prompt} tokens, {args.new_tokens} new tokens, "
          f"median of {args.repeats} interleaved runs\n")
    print("| batch | transformerkit, KV cache | transformerkit, no cache | HF generate (cache) | cache speed-up | vs HF |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        prompt = torch.randint(0, 50000, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
        mask = torch.ones_like(prompt, dtype=torch.bool)

        def ours_run(use_cache: bool) -> torch.Tensor:
            decoder = CausalLMDecoder(ours, mask, args.prompt + args.new_tokens, use_cache=use_cache)
            with torch.inference_mode():
                return torch.stack(list(generate_tokens(decoder, prompt, args.new_tokens, greedy, None, 50256)), 1)

        def hf_run() -> torch.Tensor:
            with torch.inference_mode():
                return theirs.generate(prompt, attention_mask=mask.long(), max_new_tokens=args.new_tokens,
                                       min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=50256)

        assert torch.equal(ours_run(True), ours_run(False))
        seconds = interleaved_medians({"cache": lambda: ours_run(True), "no_cache": lambda: ours_run(False),
                                       "hf": hf_run}, args.repeats)
        rate = {k: batch * args.new_tokens / v for k, v in seconds.items()}
        print(f"| {batch} | {rate['cache']:.1f} tok/s | {rate['no_cache']:.1f} tok/s | {rate['hf']:.1f} tok/s "
              f"| {rate['cache'] / rate['no_cache']:.2f}× | {rate['cache'] / rate['hf']:.2f}× |")


if __name__ == "__main__":
    main()
