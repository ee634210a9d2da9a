"""Long-range dependencies: the Transformer against the recurrent baseline on synthetic tasks
whose answer depends on a token far away (issue #23).

    python benchmarks/long_range.py [--tasks copy reverse recall] [--lengths 16 32 64 128 256 512]
                                    [--steps 400] [--seconds 60] [--out runs/long-range]

Tasks (source → target, symbols drawn at random):
  copy     x_1 … x_n → x_1 … x_n
  reverse  x_1 … x_n → x_n … x_1
  recall   k_1 v_1 … k_m v_m ? k_j → v_j        (associative recall: n = 2m + 2; the answer sits
                                                 wherever the queried key happened to be)

For each task and source length both families — a 2+2-layer Transformer (d_model 64) and a
2+2-layer LSTM encoder-decoder with global attention (d_model 80: about as many parameters) — train with
Adam from the same seed, (a) for ``--steps`` steps and (b) for ``--seconds`` of wall time, and
are scored by greedy decoding on 256 held-out examples (token accuracy; for recall, the share
of answers right). Also measured at every length: milliseconds per training step (forward +
backward, batch 32) — the Transformer's O(n²·d) attention against the LSTM's O(n) sequential
steps — and, for recall, the share of each head's (the LSTM's) attention mass on the value that
answers, at the answer step. Writes ``OUT/long_range.json``, prints the tables and draws
``docs/long-range-accuracy.png`` and ``docs/long-range-step-time.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import matplotlib
import torch
from torch import Tensor

from transformerkit.config import preset
from transformerkit.generation.search import greedy_decode
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.rnn import RNNConfig, RNNEncoderDecoder

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAD, BOS, EOS, QUERY = 0, 1, 2, 3
KEYS = range(4, 260)      # recall's keys: 256, so that 255 distinct pairs fit in n = 512
SYMBOLS = range(260, 292)  # copy/reverse symbols and recall's values: 32
VOCAB = 292
BATCH = 32


def examples(task: str, length: int, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(src (count, length), tgt_out (count, T) ending with EOS, answer positions (count,) — recall only)."""
    if task == "recall":
        pairs = (length - 2) // 2
        keys = torch.stack([torch.randperm(len(KEYS), generator=generator)[:pairs] for _ in range(count)]) + KEYS.start
        values = torch.randint(SYMBOLS.start, SYMBOLS.stop, (count, pairs), generator=generator)
        asked = torch.randint(0, pairs, (count,), generator=generator)
        src = torch.stack([keys, values], dim=2).flatten(1)
        src = torch.cat([src, torch.full((count, 1), QUERY), keys.gather(1, asked[:, None])], dim=1)
        answer = values.gather(1, asked[:, None])
        return src, torch.cat([answer, torch.full((count, 1), EOS)], dim=1), 2 * asked + 1
    src = torch.randint(SYMBOLS.start, SYMBOLS.stop, (count, length), generator=generator)
    target = src if task == "copy" else src.flip(1)
    return src, torch.cat([target, torch.full((count, 1), EOS)], dim=1), torch.zeros(count, dtype=torch.long)


def model(family: str, length: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "transformer":
        return EncoderDecoderTransformer(preset("tiny", vocab_size=VOCAB, d_model=64, d_ff=256, num_heads=4,
                                                dropout=0.0, label_smoothing=0.0, pad_id=PAD, bos_id=BOS,
                                                eos_id=EOS))
    return RNNEncoderDecoder(RNNConfig(d_model=80, num_encoder_layers=2, num_decoder_layers=2, dropout=0.0,
                                       label_smoothing=0.0, vocab_size=VOCAB, pad_id=PAD, bos_id=BOS, eos_id=EOS))


def train(net: torch.nn.Module, task: str, length: int, steps: int | None, seconds: float | None) -> tuple[int, float]:
    """Adam (lr 1e-3 after 100 warm-up steps) until ``steps`` or ``seconds`` run out → (steps, seconds)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100))
    generator = torch.Generator().manual_seed(1)
    net.train()
    start, done = time.perf_counter(), 0
    while (steps is None or done < steps) and (seconds is None or time.perf_counter() - start < seconds):
        src, tgt_out, _ = examples(task, length, BATCH, generator)
        tgt_in = torch.cat([torch.full((BATCH, 1), BOS), tgt_out[:, :-1]], dim=1)
        loss = net.loss(src, tgt_in, tgt_out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        done += 1
    return done, time.perf_counter() - start


@torch.no_grad()
def accuracy(net: torch.nn.Module, task: str, length: int) -> float:
    """Greedy token accuracy on 256 held-out examples (recall: the answer token)."""
    net.eval()
    src, tgt_out, _ = examples(task, length, 256, torch.Generator().manual_seed(123))
    predicted = greedy_decode(net, src, max_length_offset=1, max_length=tgt_out.shape[1])
    predicted = torch.nn.functional.pad(predicted, (0, max(0, tgt_out.shape[1] - predicted.shape[1])), value=PAD)
    predicted = predicted[:, :tgt_out.shape[1]]
    real = (tgt_out != EOS) & (tgt_out != PAD)
    return round((predicted == tgt_out)[real].float().mean().item(), 4)


@torch.no_grad()
def answer_attention(net: torch.nn.Module, length: int) -> list[list[float]]:
    """Recall: per decoder layer and head, the mean attention mass on the answering value at the
    answer step (the LSTM: its one attention)."""
    net.eval()
    net.set_attention_kernel("reference")  # the kernel that returns its weights
    src, tgt_out, answer = examples("recall", length, 256, torch.Generator().manual_seed(123))
    mask = net.source_mask(src)
    memory, _ = net.encode(src, mask)
    _, layers = net.decode(torch.full((len(src), 1), BOS), memory, mask, need_weights=True)
    shares = []
    for layer in layers:
        weights = layer.cross_attention[:, :, 0]  # (batch, heads, source)
        shares.append([round(v, 3) for v in weights.gather(2, answer[:, None, None].expand(-1, weights.shape[1], 1))
                       .mean(dim=0)[:, 0].tolist()])
    return shares


def step_milliseconds(family: str, length: int) -> float:
    """Median forward + backward time of one batch of 32 copy examples of ``length`` tokens."""
    net = model(family, length)
    net.train()
    src, tgt_out, _ = examples("copy", length, BATCH, torch.Generator().manual_seed(0))
    tgt_in = torch.cat([torch.full((BATCH, 1), BOS), tgt_out[:, :-1]], dim=1)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        net.loss(src, tgt_in, tgt_out).backward()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times[1:]), 1)


def table_one(length: int, d: int = 64) -> dict[str, object]:
    """The paper's Table 1 at this length and width, per layer and sequence: FLOPs of self-attention's
    core (QKᵀ and AV: 4·n²·d) and of its projections (Q, K, V, O: 8·n·d²), of an LSTM layer (four
    gates over input and state: 16·n·d²); sequential steps; the longest path between two positions."""
    return {"n": length, "d": d, "attention_core_flops": 4 * length ** 2 * d, "attention_projection_flops": 8 * length * d ** 2,
            "lstm_flops": 16 * length * d ** 2, "attention_sequential": 1, "lstm_sequential": length,
            "attention_path": 1, "lstm_path": length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["copy", "reverse", "recall"], choices=["copy", "reverse", "recall"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=400, help="training steps of the equal-steps comparison")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time of the equal-time comparison")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "long-range")
    parser.add_argument("--replot", action="store_true", help="only redraw the plots from OUT/long_range.json")
    parser.add_argument("--plots", default="long-range", help="plot names: docs/<PLOTS>-accuracy.png, …-step-time.png")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((args.out / "long_range.json").read_text(encoding="utf-8"))
        args.tasks = list(dict.fromkeys(r["task"] for r in results["runs"]))
        plots(results, args)
        return
    families = ["transformer", "rnn"]
    results: dict[str, object] = {"threads": torch.get_num_threads(), "steps": args.steps, "seconds": args.seconds,
                                  "parameters": {f: sum(p.numel() for p in model(f, 16).parameters()) for f in families},
                                  "step_ms": {}, "table_1": [table_one(n) for n in args.lengths], "runs": []}
    for length in args.lengths:
        results["step_ms"][length] = {f: step_milliseconds(f, length) for f in families}  # type: ignore[index]
        print(f"n={length}: ms/step {results['step_ms'][length]}", flush=True)  # type: ignore[index]
    for task in args.tasks:
        for length in args.lengths:
            for family in families:
                for budget in ("steps", "seconds"):
                    net = model(family, length)
                    steps, seconds = train(net, task, length, args.steps if budget == "steps" else None,
                                           args.seconds if budget == "seconds" else None)
                    run = {"task": task, "length": length, "family": family, "budget": budget, "steps": steps,
                           "seconds": round(seconds, 1), "accuracy": accuracy(net, task, length)}
                    if task == "recall" and budget == "steps":
                        run["answer_attention"] = answer_attention(net, length)
                    results["runs"].append(run)  # type: ignore[attr-defined]
                    print(json.dumps(run), flush=True)
                    (args.out / "long_range.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plots(results, args)


def plots(results: dict[str, object], args: argparse.Namespace) -> None:
    runs = results["runs"]
    assert isinstance(runs, list)
    figure, axes = plt.subplots(1, len(args.tasks), figsize=(4.2 * len(args.tasks), 3.6), squeeze=False)
    for axis, task in zip(axes[0], args.tasks):
        for family, colour in (("transformer", "tab:blue"), ("rnn", "tab:orange")):
            for budget, style in (("steps", "-"), ("seconds", "--")):
                points = [(r["length"], r["accuracy"]) for r in runs
                          if r["task"] == task and r["family"] == family and r["budget"] == budget]
                name = "Transformer" if family == "transformer" else "LSTM + attention"
                label = f"{name}, " + (f"{results['steps']} steps" if budget == "steps" else f"{results['seconds']:g} s")
                axis.plot(*zip(*points), style, marker="o", color=colour, label=label)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("source length n (tokens)")
        axis.set_ylabel("greedy token accuracy")
        axis.set_title(task)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(ROOT / "docs" / f"{args.plots}-accuracy.png", dpi=120)
    plt.close(figure)
    step_ms = results["step_ms"]
    assert isinstance(step_ms, dict)
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for family, label in (("transformer", "Transformer (O(n²·d) per layer, 1 sequential step)"),
                          ("rnn", "LSTM (O(n·d²) per layer, n sequential steps)")):
        axis.plot([int(n) for n in step_ms], [v[family] for v in step_ms.values()], marker="o", label=label)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("sequence length n (tokens)")
    axis.set_ylabel("ms per training step (batch 32)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(ROOT / "docs" / f"{args.plots}-step-time.png", dpi=120)
    plt.close(figure)
    print(f"{len(runs)} runs; plots in docs/{args.plots}-accuracy.png, docs/{args.plots}-step-time.png")


if __name__ == "__main__":
    main()
