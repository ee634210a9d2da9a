"""What the approximate decoding dtypes change in a trained language model's predictions
(``transformerkit generate --dtype bf16`` and ``--dtype int8``).

    python benchmarks/decoding_accuracy.py --model runs/shakespeare-char/model --text data/shakespeare/valid.txt

Scores the first ``--blocks`` blocks of ``--text`` with the model as ``generate`` loads it for each
dtype (:func:`transformerkit.inference.language_modeling.load_generator`: fp32 and bf16 in the
decoding layout where it measures faster, int8 with PyTorch's dynamic quantization) and prints,
for bf16 and int8 against fp32, the largest logit difference, the share of positions whose most
probable next token is the same, and the mean negative log-likelihood (nats per token) of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transformerkit.inference.language_modeling import load_generator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a decoder-only model directory")
    parser.add_argument("--text", required=True, help="held-out UTF-8 text")
    parser.add_argument("--blocks", type=int, default=16, help="blocks of max_positions tokens to score")
    args = parser.parse_args()
    logits = {}
    for dtype in ("fp32", "bf16", "int8"):
        generator = load_generator(args.model, device="cpu", dtype=dtype)
        block = generator.model.config.max_positions
        with open(args.text, encoding="utf-8") as handle:
            text = handle.read(args.blocks * block * 8)
        ids = torch.tensor(generator.tokenizer.encode([text])[0][:args.blocks * block + 1])
        usable = (len(ids) - 1) // block * block
        inputs, targets = ids[:usable].view(-1, block), ids[1:usable + 1].view(-1, block)
        with torch.inference_mode():
            hidden, _ = generator.model.hidden_states(inputs)
            logits[dtype] = generator.model.logits(hidden).float()
    nll = {dtype: F.cross_entropy(values.flatten(0, 1), targets.flatten()).item() for dtype, values in logits.items()}
    full = logits["fp32"]
    print(f"{targets.numel()} held-out positions; NLL fp32 {nll['fp32']:.4f} nats/token")
    for dtype in ("bf16", "int8"):
        print(f"{dtype}: max |Δ logit| {(full - logits[dtype]).abs().max().item():.3f}, same argmax "
              f"{(full.argmax(-1) == logits[dtype].argmax(-1)).float().mean().item():.2%}, "
              f"NLL {nll[dtype]:.4f} nats/token ({nll[dtype] - nll['fp32']:+.4f})")


if __name__ == "__main__":
    main()
