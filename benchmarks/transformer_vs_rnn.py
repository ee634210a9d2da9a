"""The Transformer against the recurrent baseline on en→de at the same wall-clock budget (issue #23).

    python benchmarks/transformer_vs_rnn.py translation --minutes 15 [--out runs/vs-rnn-15]

Trains configs/en-de-cpu.yaml (the Transformer, 7.6 M parameters) and configs/en-de-rnn-cpu.yaml
(a bidirectional-LSTM encoder-decoder with global attention, 8.1 M) one after the other, each
alone on the machine with the same corpus, vocabulary, token batches, budget and beam search;
both validate on the same 200 sentences every ``--validate-every`` steps (greedy BLEU: the
curves) and are scored on the whole test split at the end (beam 4, the averaged checkpoints).
Writes ``OUT/summary.json``, prints the RESULTS.md rows and draws BLEU against minutes to
``docs/transformer-vs-rnn-translation-<minutes>min.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"Transformer": "configs/en-de-cpu.yaml", "LSTM + attention": "configs/en-de-rnn-cpu.yaml"}


def read_log(path: Path) -> dict[str, object]:
    """Parameters, the validation curve (minutes, BLEU), steps, training tokens/s from a log.jsonl."""
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    start = next(e for e in events if e["event"] == "start")
    valid = [(e["elapsed_seconds"] / 60, e["valid_bleu"]) for e in events if e["event"] == "valid"]
    train = [e for e in events if e["event"] == "train"]
    speeds = [e["tokens_per_second"] for e in train[len(train) // 10:]]  # after the first tenth (warm caches)
    return {"parameters": start["parameters"], "precision": start["speed_choices"].get("precision", {}).get("use"),
            "curve": valid, "steps": max((e["step"] for e in events), default=0),
            "train_tokens_per_second": round(sum(speeds) / max(len(speeds), 1))}


def train(name: str, recipe: str, out: Path, minutes: float, validate_every: int, extra: list[str]
          ) -> dict[str, object]:
    run = out / ("transformer" if name == "Transformer" else "rnn")
    command = [sys.executable, "-m", "transformerkit", "train", recipe,
               "--set", f"training.output_dir={run}", "--set", f"training.max_minutes={minutes}",
               "--set", f"training.validate_every={validate_every}", "--set", "training.valid_bleu_sentences=200",
               "--set", "training.progress=false", *[a for setting in extra for a in ("--set", setting)]]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.perf_counter() - started
    scores = json.loads((run / "results.json").read_text(encoding="utf-8"))
    return {"name": name, "recipe": recipe, "wall_seconds": round(wall), **read_log(run / "log.jsonl"),
            "test_bleu": scores["bleu"], "test_chrf": scores["chrf"],
            "decode_sentences_per_second": scores["sentences_per_second"]}


def plot(results: list[dict[str, object]], minutes: float, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for result in results:
        curve = result["curve"]
        assert isinstance(curve, list)
        axis.plot([m for m, _ in curve], [b for _, b in curve], marker="o",
                  label=f"{result['name']} ({int(result['parameters']) / 1e6:.1f} M parameters)")  # type: ignore[call-overload]
    axis.set_xlabel("training time on 2 CPU cores (minutes)")
    axis.set_ylabel("validation BLEU (greedy, 200 sentences)")
    axis.set_title(f"en→de, Debian gettext corpus, {minutes:g}-minute budget")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["translation"])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each model")
    parser.add_argument("--validate-every", type=int, default=250, help="steps between the curve's points")
    parser.add_argument("--out", type=Path, default=None, help="runs directory (default: runs/vs-rnn-<minutes>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for both runs (e.g. data.test=small.tsv for a quick check)")
    args = parser.parse_args()
    out = args.out or ROOT / "runs" / f"vs-rnn-{args.minutes:g}"
    results = [train(name, recipe, out, args.minutes, args.validate_every, args.set) for name, recipe in RECIPES.items()]
    summary = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "minutes": args.minutes, "results": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    figure = ROOT / "docs" / f"transformer-vs-rnn-translation-{args.minutes:g}min.png"
    plot(results, args.minutes, figure)
    print("| model | parameters | steps | train tokens/s | test BLEU | test chrF | decoding sentences/s | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {int(r['parameters']) / 1e6:.1f} M | {r['steps']:,} | {r['train_tokens_per_second']:,} "  # type: ignore[call-overload]
              f"| {r['test_bleu']} | {r['test_chrf']} | {r['decode_sentences_per_second']} | "
              f"{int(r['wall_seconds']) / 60:.1f} min |")  # type: ignore[call-overload]
    print(f"curves: {figure}")


if __name__ == "__main__":
    main()
