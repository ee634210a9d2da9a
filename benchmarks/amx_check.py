"""Which oneDNN kernels (and so which ISA: AMX, AVX-512, AVX2) run our bf16 work on this CPU.

    python benchmarks/amx_check.py      # runs itself again with ONEDNN_VERBOSE=1 and counts its lines

Runs one bf16-autocast training step of the small encoder-decoder (the benchmark table's row),
one bf16 forward of BERT-base, one bf16 product and the int8 feed-forward of a decoding step with
its weights packed for each quantized engine (``onednn``: oneDNN's int8 kernels; ``x86``: FBGEMM,
which prints nothing here), and counts oneDNN's verbose lines by kernel implementation
(``brg_matmul:avx10_1_512_amx`` is AMX, for bf16 and for u8×s8 int8; ``…avx512_core_bf16`` the
AVX-512 BF16 dot products; ``gemm:jit`` / ``ref`` fall-backs), then times bf16 products of
growing size to find the AMX peak these 2 cores reach.
"""

from __future__ import annotations

import collections
import copy
import ctypes
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import interleaved_medians  # noqa: E402

from transformerkit.backends.quantization import quantize_linear_int8  # noqa: E402
from transformerkit.config import preset  # noqa: E402
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer  # noqa: E402
from transformerkit.models.encoder_only import EncoderOnlyTransformer  # noqa: E402


MARK = "=== "


def kernels(run: Callable[[], None], label: str) -> None:
    """Run ``run`` between two marker lines (oneDNN's verbose lines fall between them)."""
    print(f"{MARK}{label}", flush=True)
    run()
    ctypes.CDLL(None).fflush(None)  # oneDNN prints through C's buffered stdout
    print(f"{MARK}end", flush=True)


def count(verbose: str) -> None:
    """For each marked section of ``verbose`` (this script's output under ONEDNN_VERBOSE=1), the
    oneDNN primitives executed, by kind and implementation; the other lines as they are."""
    label, counts = None, collections.Counter()
    for line in verbose.splitlines():
        if line.startswith(MARK):
            if label is not None:
                print(f"\n{label}: oneDNN primitives executed, by kind and implementation")
                for (kind, implementation), n in counts.most_common():
                    print(f"  {n:5d}  {kind:10s} {implementation}")
            label, counts = (None if line == MARK + "end" else line[len(MARK):]), collections.Counter()
        elif line.startswith("onednn_verbose"):
            fields = line.split(",")
            if label is not None and fields[2:4] == ["primitive", "exec"]:
                counts[(fields[5], fields[6])] += 1
        else:
            print(line)


def main() -> None:
    torch.manual_seed(0)
    config = preset("small", vocab_size=8000)
    model = EncoderDecoderTransformer(config).train()
    src = torch.randint(3, 8000, (16, 64))
    tgt = torch.randint(3, 8000, (16, 65))

    def train_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.loss(src, tgt[:, :-1], tgt[:, 1:])
        loss.backward()

    train_step()  # warm-up outside the capture
    kernels(train_step, "bf16 training step, enc-dec small (256, 3+3), batch 16×64")
    bert = EncoderOnlyTransformer(preset("bert-base", dropout=0.0)).eval()
    ids = torch.randint(1, 30000, (8, 128))

    def bert_forward() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            bert(ids, torch.ones_like(ids, dtype=torch.bool))
    bert_forward()
    kernels(bert_forward, "bf16 forward, BERT-base, batch 8×128")
    a, b = torch.randn(2048, 2048).bfloat16(), torch.randn(2048, 2048).bfloat16()
    kernels(lambda: torch.mm(a, b), "bf16 torch.mm 2048³")
    translator = EncoderDecoderTransformer(preset("base", vocab_size=8000, dropout=0.0)).eval()
    for engine in ("onednn", "x86"):
        in_int8 = quantize_linear_int8(copy.deepcopy(translator), engine)
        memory = torch.randn(32, 32, 512)

        def int8_step(model: EncoderDecoderTransformer = in_int8) -> None:
            with torch.inference_mode():
                model.decoder.layers[0].feed_forward(memory[:, :1])  # one decoding step's FFN, 32 rows
        int8_step()
        kernels(int8_step, f"int8 FFN of a decoding step, 32 rows (base shape), weights packed for {engine}")
    print("\nbf16 product rate by size (median of 5, interleaved):")
    sizes = [512, 1024, 2048, 4096]
    operands = {n: (torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()) for n in sizes}
    seconds = interleaved_medians({str(n): (lambda n=n: torch.mm(*operands[n])) for n in sizes}, repeats=5)
    for n in sizes:
        print(f"  {n}³: {2 * n ** 3 / seconds[str(n)] / 1e9:,.0f} GFLOP/s")


if __name__ == "__main__":
    if os.environ.get("ONEDNN_VERBOSE") == "1":
        main()
    else:
        child = subprocess.run([sys.executable, __file__], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                               capture_output=True, text=True, check=True)
        count(child.stdout)
