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
steps — and, for every task, where attention looks: the share of each decoder head's (the LSTM's)
attention mass on the source token that holds the answer, and on the tokens within two positions
of it. Writes ``OUT/long_range.json``, prints
the tables and draws ``docs/long-range-accuracy.png``, ``docs/long-range-step-time.png`` and
``docs/long-range-attention.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import matplotlib
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from transformerkit.config import preset
from transformerkit.generation.search import greedy_decode
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.rnn import RNNConfig, RNNEncoderDecoder
from transformerkit.nn.attention import MultiHeadAttention

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAD, BOS, EOS, QUERY = 0, 1, 2, 3
KEYS = range(4, 260)      # recall's keys: 256, so that 255 distinct pairs fit in n = 512
SYMBOLS = range(260, 292)  # copy/reverse symbols and recall's values: 32
VOCAB = 292
BATCH = 32


def examples(task: str, length: int, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(src (count, length), tgt_out (count, T) ending with EOS, answer positions (count, T − 1): the
    source position that holds each target token — copy t, reverse n − 1 − t, recall the queried value)."""
    if task == "recall":
        pairs = (length - 2) // 2
        keys = torch.stack([torch.randperm(len(KEYS), generator=generator)[:pairs] for _ in range(count)]) + KEYS.start
        values = torch.randint(SYMBOLS.start, SYMBOLS.stop, (count, pairs), generator=generator)
        asked = torch.randint(0, pairs, (count, 1), generator=generator)
        src = torch.stack([keys, values], dim=2).flatten(1)
        src = torch.cat([src, torch.full((count, 1), QUERY), keys.gather(1, asked)], dim=1)
        return src, torch.cat([values.gather(1, asked), torch.full((count, 1), EOS)], dim=1), 2 * asked + 1
    src = torch.randint(SYMBOLS.start, SYMBOLS.stop, (count, length), generator=generator)
    positions = torch.arange(length).expand(count, -1)
    if task == "reverse":
        positions = length - 1 - positions
    return src, torch.cat([src.gather(1, positions), torch.full((count, 1), EOS)], dim=1), positions


def decoder_input(tgt_out: Tensor) -> Tensor:
    """Teacher forcing: the target shifted right behind BOS, (batch, T) → (batch, T)."""
    return torch.cat([torch.full((len(tgt_out), 1), BOS), tgt_out[:, :-1]], dim=1)


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
        tgt_in = decoder_input(tgt_out)
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
def answer_attention(net: torch.nn.Module, task: str, length: int, window: int = 0, count: int = 64
                     ) -> list[list[float]]:
    """Where attention looks: per decoder layer and head, the mean cross-attention mass on the source
    token that holds each target token's answer — with ``window`` > 0, on the tokens at most
    ``window`` positions from it — averaged over target steps t and ``count`` held-out examples
    (teacher-forced; the LSTM: its one attention over the encoder states). Chance — attention
    spread evenly — is (2·window + 1) / n."""
    net.eval()
    net.set_attention_kernel("reference")  # the kernel that returns its weights
    src, tgt_out, answer = examples(task, length, count, torch.Generator().manual_seed(123))
    tgt_in = decoder_input(tgt_out)
    mask = net.source_mask(src)
    memory, _ = net.encode(src, mask)
    _, layers = net.decode(tgt_in[:, :answer.shape[1]], memory, mask, need_weights=True)
    near = (torch.arange(src.shape[1]) - answer[:, :, None]).abs() <= window  # (batch, answer steps, source)
    shares = []
    for layer in layers:
        weights = layer.cross_attention  # (batch, heads, answer steps, source)
        on_answer = (weights * near[:, None]).sum(dim=3)
        shares.append([round(v, 3) for v in on_answer.mean(dim=(0, 2)).tolist()])
    return shares


def step_milliseconds(family: str, length: int) -> float:
    """Median forward + backward time of one batch of 32 copy examples of ``length`` tokens."""
    net = model(family, length)
    net.train()
    src, tgt_out, _ = examples("copy", length, BATCH, torch.Generator().manual_seed(0))
    tgt_in = decoder_input(tgt_out)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        net.loss(src, tgt_in, tgt_out).backward()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times[1:]), 1)


class _ProductCounter(TorchDispatchMode):
    """Counts the matrix products PyTorch dispatches (each a kernel launch that waits for its inputs)."""

    PRODUCTS = ("aten.mm.", "aten.addmm.", "aten.bmm.", "aten.baddbmm.")

    def __init__(self) -> None:
        super().__init__()
        self.products = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.products += str(func).startswith(self.PRODUCTS)
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def table_one(length: int, d: int = 64, heads: int = 4) -> dict[str, object]:
    """The paper's Table 1 measured at this length and width, for one layer over one sequence:
    FLOPs counted by ``torch.utils.flop_counter`` (self-attention: projections 8·n·d² + core
    QKᵀ and AV 4·n²·d; an LSTM layer: four gates over input and state, 16·n·d²), and the matrix
    products dispatched — a self-attention layer's number does not grow with n (its products
    cover every position at once: O(1) sequential operations), an LSTM layer's grows by one per
    position (each step's product waits for the previous step's state: O(n), the longest path
    between two positions n − 1 steps)."""
    x = torch.randn(1, length, d)
    attention = MultiHeadAttention(d, heads, d // heads, d // heads, kernel="reference")
    lstm = torch.nn.LSTM(d, d, batch_first=True)
    measured = {}
    for name, layer in (("attention", lambda: attention(x)), ("lstm", lambda: lstm(x))):
        # oneDNN runs the LSTM as one opaque kernel; PyTorch's own loop shows its products
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TF32 acceleration")  # the flags' note, for Intel GPUs
            with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as flops, \
                    _ProductCounter() as products:
                layer()
        measured[name] = (flops.get_total_flops(), products.products)
    return {"n": length, "d": d, "attention_flops": measured["attention"][0],
            "attention_flops_formula": 8 * length * d ** 2 + 4 * length ** 2 * d,
            "attention_products": measured["attention"][1], "lstm_flops": measured["lstm"][0],
            "lstm_flops_formula": 16 * length * d ** 2, "lstm_products": measured["lstm"][1],
            "attention_path": 1, "lstm_path": length - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["copy", "reverse", "recall"], choices=["copy", "reverse", "recall"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=400, help="training steps of the equal-steps comparison")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time of the equal-time comparison")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "long-range")
    parser.add_argument("--replot", action="store_true", help="only redraw the plots from OUT/long_range.json")
    parser.add_argument("--plots", default="long-range",
                        help="plot names: docs/<PLOTS>-accuracy.png, …-step-time.png, …-attention.png")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((args.out / "long_range.json").read_text(encoding="utf-8"))
        args.tasks = list(dict.fromkeys(r["task"] for r in results["runs"]))
        plots(results, args)
        print(markdown(results))
        return
    families = ["transformer", "rnn"]
    results: dict[str, object] = {"threads": torch.get_num_threads(), "steps": args.steps, "seconds": args.seconds,
                                  "parameters": {f: sum(p.numel() for p in model(f, 16).parameters()) for f in families},
                                  "step_ms": {}, "table_1": [table_one(n) for n in args.lengths], "runs": []}
    for length in args.lengths:
        results["step_ms"][str(length)] = {f: step_milliseconds(f, length) for f in families}  # type: ignore[index]
        print(f"n={length}: ms/step {results['step_ms'][str(length)]}", flush=True)  # type: ignore[index]
    for task in args.tasks:
        for length in args.lengths:
            for family in families:
                for budget in ("steps", "seconds"):
                    net = model(family, length)
                    steps, seconds = train(net, task, length, args.steps if budget == "steps" else None,
                                           args.seconds if budget == "seconds" else None)
                    run = {"task": task, "length": length, "family": family, "budget": budget, "steps": steps,
                           "seconds": round(seconds, 1), "accuracy": accuracy(net, task, length),
                           "answer_attention": answer_attention(net, task, length),
                           "near_answer_attention": answer_attention(net, task, length, window=2)}
                    results["runs"].append(run)  # type: ignore[attr-defined]
                    print(json.dumps(run), flush=True)
                    (args.out / "long_range.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plots(results, args)
    print(markdown(results))


def markdown(results: dict[str, object]) -> str:
    """The RESULTS.md tables: accuracy per task and length, Table 1 with the step times, and the
    attention share on the answer's token (the Transformer's best head against the LSTM's)."""
    runs = {(r["task"], r["length"], r["family"], r["budget"]): r for r in results["runs"]}  # type: ignore[attr-defined]
    lines = [f"| task | n | Transformer, {results['steps']} steps | LSTM, {results['steps']} steps | "
             f"Transformer, {results['seconds']:g} s (steps) | LSTM, {results['seconds']:g} s (steps) | "
             f"best Transformer head on the answer, {results['seconds']:g} s | LSTM attention on the answer, "
             f"{results['seconds']:g} s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task, length, family, budget in runs:
        if family != "transformer" or budget != "steps":
            continue
        by_steps = [runs[task, length, f, "steps"] for f in ("transformer", "rnn")]
        by_time = [runs[task, length, f, "seconds"] for f in ("transformer", "rnn")]
        cells = [f"{100 * r['accuracy']:.1f} %" for r in by_steps]
        cells += [f"{100 * r['accuracy']:.1f} % ({r['steps']:,})" for r in by_time]
        cells += [f"{100 * max(max(layer) for layer in r['answer_attention']):.1f} %" for r in by_time]
        lines.append(f"| {task} | {length} | " + " | ".join(cells) + " |")
    lines += ["", "| n | Transformer ms/step | LSTM ms/step | attention FLOPs (counted = 8nd² + 4n²d) | "
              "LSTM FLOPs (counted = 16nd²) | matrix products (attention / LSTM) | longest path (attention / LSTM) |",
              "|---:|---:|---:|---:|---:|---|---|"]
    for row in results["table_1"]:  # type: ignore[attr-defined]
        step = results["step_ms"][str(row["n"])]  # type: ignore[index]
        lines.append(f"| {row['n']} | {step['transformer']} | {step['rnn']} | {row['attention_flops'] / 1e6:.2f} M | "
                     f"{row['lstm_flops'] / 1e6:.2f} M | {row['attention_products']} / {row['lstm_products']} | "
                     f"{row['attention_path']} / {row['lstm_path']} |")
    return "\n".join(lines)


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
    attention_plot(results, args)
    print(f"{len(runs)} runs; plots in docs/{args.plots}-accuracy.png, …-step-time.png, …-attention.png")


def attention_plot(results: dict[str, object], args: argparse.Namespace) -> None:
    """One heat map a task: rows the Transformer's decoder layers × heads and the LSTM's attention,
    columns the source lengths, cells the attention mass on the answer's token — of the equal-time
    runs, the longer-trained ones, where a family solves a task at all."""
    figure, axes = plt.subplots(1, len(args.tasks), figsize=(4.2 * len(args.tasks), 4.4), squeeze=False)
    for axis, task in zip(axes[0], args.tasks):
        chosen = {(r["family"], r["length"]): r for r in results["runs"]  # type: ignore[attr-defined]
                  if r["task"] == task and r["budget"] == "seconds" and "answer_attention" in r}
        lengths = sorted({n for _, n in chosen})
        rows: list[str] = []
        grid: list[list[float]] = []
        for family in ("transformer", "rnn"):
            shape = next(r["answer_attention"] for (f, _), r in chosen.items() if f == family)
            for layer, heads in enumerate(shape):  # type: ignore[arg-type]
                for head in range(len(heads)):
                    rows.append(f"Transformer layer {layer + 1} head {head + 1}" if family == "transformer"
                                else "LSTM attention")
                    grid.append([chosen[family, n]["answer_attention"][layer][head] for n in lengths])  # type: ignore[index]
        image = axis.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for i, row in enumerate(grid):
            for j, share in enumerate(row):
                axis.text(j, i, f"{100 * share:.0f}", ha="center", va="center", fontsize=7,
                          color="black" if share > 0.6 else "white")
        axis.set_xticks(range(len(lengths)), [f"{n}\n({100 / n:.1f})" for n in lengths], fontsize=7)
        axis.set_yticks(range(len(rows)), rows if axis is axes[0][0] else [], fontsize=7)
        axis.set_xlabel("source length n (tokens)\nin brackets: 1/n, attention spread evenly", fontsize=8)
        axis.set_title(f"{task}, {results['seconds']:g} s of training:\n% of attention on the answer's token", fontsize=9)
    figure.colorbar(image, ax=axes[0].tolist(), fraction=0.02, label="share of attention mass")
    figure.savefig(ROOT / "docs" / f"{args.plots}-attention.png", dpi=120, bbox_inches="tight")
    plt.close(figure)


if __name__ == "__main__":
    main()
