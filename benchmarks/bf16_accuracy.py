"""What bf16 weights change in a trained language model's predictions (the ``--dtype bf16`` option).

    python benchmarks/bf16_accuracy.py --model runs/shakespeare-char/model --text data/shakespeare/valid.txt

Scores the first ``--blocks`` blocks of ``--text`` with the model in fp32 and in bf16, each in the
decoding layout ``transformerkit generate`` loads it with (:mod:`transformerkit.generation.layout`), and prints
the largest logit difference, the share of positions whose most probable next token is the same,
and the mean negative log-likelihood of each (nats per token).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from transformerkit.checkpoint import load_model_dir
from transformerkit.generation.layout import use_decoding_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a decoder-only model directory")
    parser.add_argument("--text", required=True, help="held-out UTF-8 text")
    parser.add_argument("--blocks", type=int, default=16, help="blocks of max_positions tokens to score")
    args = parser.parse_args()
    model, tokenizer, _ = load_model_dir(args.model)
    block = model.config.max_positions
    with open(args.text, encoding="utf-8") as handle:
        text = handle.read(args.blocks * block * 8)
    ids = torch.tensor(tokenizer.encode([text])[0][:args.blocks * block + 1])
    usable = (len(ids) - 1) // block * block
    inputs, targets = ids[:usable].view(-1, block), ids[1:usable + 1].view(-1, block)
    with torch.inference_mode():
        half = use_decoding_layout(copy.deepcopy(model).to(torch.bfloat16))(inputs).float()
        full = use_decoding_layout(model)(inputs).float()
    nll = {name: F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
           for name, logits in (("fp32", full), ("bf16", half))}
    print(f"{targets.numel()} positions: max |Δ logit| {(full - half).abs().max().item():.3f}, "
          f"same argmax {(full.argmax(-1) == half.argmax(-1)).float().mean().item():.2%}, "
          f"NLL fp32 {nll['fp32']:.4f} vs bf16 {nll['bf16']:.4f} nats/token")


if __name__ == "__main__":
    main()
