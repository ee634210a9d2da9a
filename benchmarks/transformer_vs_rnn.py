"""The Transformer against the recurrent baselines at the same wall-clock budget (issue #23).

    python benchmarks/transformer_vs_rnn.py translation --minutes 15 [--side-by-side] [--out runs/vs-rnn-15]
    python benchmarks/transformer_vs_rnn.py language-modeling --minutes 15 [--side-by-side]

``translation``: configs/en-de-cpu.yaml (the Transformer, 7.6 M parameters) against
configs/en-de-rnn-cpu.yaml (a bidirectional-LSTM encoder-decoder with global attention, 8.1 M),
with the same corpus, vocabulary, token batches, budget and beam search. Both validate on the
same 200 sentences every ``--validate-every`` steps (greedy BLEU: the curves) and are scored on
the whole test split at the end (beam 4, the averaged checkpoints; BLEU, chrF, sentences/s).

``language-modeling``: configs/shakespeare-char.yaml (a character-level GPT, 3.2 M parameters)
against configs/shakespeare-char-lstm.yaml (a 2-layer LSTM language model, 3.2 M) on the same
text, characters, blocks and batches; both validate every ``--validate-every`` steps (bits per
character: the curves); generation speed is measured at the end (greedy, one prompt, 256 new
characters).

The two run one after the other, each alone on the machine — or, with ``--side-by-side``, both
at once, each pinned to its own core with one thread (``taskset``; half the wall time, the same
share of the machine for each). Writes ``OUT/summary.json``, prints the RESULTS.md rows and
draws the curves to ``docs/transformer-vs-rnn-<experiment>-<minutes>min.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch

from transformerkit.inference.language_modeling import load_generator

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Experiment:
    recipes: dict[str, str]
    """Model name → recipe; the first is the Transformer."""
    curve: str
    """The validation event's field that the curves plot."""
    curve_label: str
    settings: tuple[str, ...] = ()
    """Recipe overrides of both runs."""


EXPERIMENTS = {
    "translation": Experiment({"Transformer": "configs/en-de-cpu.yaml", "LSTM + attention": "configs/en-de-rnn-cpu.yaml"},
                              "valid_bleu", "validation BLEU (greedy, 200 sentences)",
                              ("training.valid_bleu_sentences=200",)),
    "language-modeling": Experiment({"Transformer": "configs/shakespeare-char.yaml",
                                     "LSTM": "configs/shakespeare-char-lstm.yaml"},
                                    "valid_bits_per_character", "validation bits per character"),
}


def run_directory(out: Path, name: str) -> Path:
    return out / ("transformer" if name == "Transformer" else "rnn")


def read_log(path: Path, curve: str) -> dict[str, object]:
    """Parameters, the validation curve (minutes, ``curve``), steps, training tokens/s and the last
    validation's scores from a log.jsonl."""
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    start = next(e for e in events if e["event"] == "start")
    valid = [e for e in events if e["event"] == "valid"]
    train = [e for e in events if e["event"] == "train"]
    speeds = [e["tokens_per_second"] for e in train[len(train) // 10:]]  # after the first tenth (warm caches)
    last = {k: v for k, v in valid[-1].items() if k.startswith("valid_")} if valid else {}
    return {"parameters": start["parameters"], "precision": start["speed_choices"].get("precision", {}).get("use"),
            "curve": [(e["elapsed_seconds"] / 60, e[curve]) for e in valid], "last_validation": last,
            "steps": max((e["step"] for e in events), default=0),
            "train_tokens_per_second": round(sum(speeds) / max(len(speeds), 1))}


def train_command(experiment: Experiment, name: str, out: Path, minutes: float, validate_every: int,
                  extra: list[str]) -> list[str]:
    settings = [f"training.output_dir={run_directory(out, name)}", f"training.max_minutes={minutes}",
                f"training.validate_every={validate_every}", "training.progress=false", *experiment.settings, *extra]
    return [sys.executable, "-m", "transformerkit", "train", experiment.recipes[name],
            *[a for setting in settings for a in ("--set", setting)]]


def generation_tokens_per_second(model_dir: Path, new_tokens: int = 256) -> float:
    """Greedy generation of up to ``new_tokens`` from one prompt (steps counted), fp32, the best of 3."""
    generator = load_generator(model_dir, dtype="fp32", max_new_tokens=new_tokens, do_sample=False, stop=[])
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        steps = sum(1 for _ in generator.stream(["ROMEO.\n"]))
        rates.append(steps / (time.perf_counter() - started))
    return round(max(rates), 1)


def result(experiment: Experiment, name: str, out: Path, wall: float) -> dict[str, object]:
    run = run_directory(out, name)
    scores: dict[str, object] = {"name": name, "recipe": experiment.recipes[name], "wall_seconds": round(wall),
                                 **read_log(run / "log.jsonl", experiment.curve)}
    if (run / "results.json").is_file():  # a translation's test split
        test = json.loads((run / "results.json").read_text(encoding="utf-8"))
        scores.update(test_bleu=test["bleu"], test_chrf=test["chrf"],
                      decode_sentences_per_second=test["sentences_per_second"])
    else:
        scores["generation_tokens_per_second"] = generation_tokens_per_second(run / "model")
    return scores


def run_one_after_the_other(experiment: Experiment, out: Path, minutes: float, validate_every: int,
                            extra: list[str]) -> list[dict[str, object]]:
    results = []
    for name in experiment.recipes:
        started = time.perf_counter()
        subprocess.run(train_command(experiment, name, out, minutes, validate_every, extra), cwd=ROOT, check=True)
        results.append(result(experiment, name, out, time.perf_counter() - started))
    return results


def run_side_by_side(experiment: Experiment, out: Path, minutes: float, validate_every: int,
                     extra: list[str]) -> list[dict[str, object]]:
    """Both runs at once, the i-th on core i with one thread (``taskset -c i``, OMP/MKL threads 1);
    what is measured afterwards (generation) runs with one thread too."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    processes = [subprocess.Popen(["taskset", "-c", str(core),
                                   *train_command(experiment, name, out, minutes, validate_every, extra)],
                                  cwd=ROOT, env=environment)
                 for core, name in enumerate(experiment.recipes)]
    walls: dict[int, float] = {}
    while len(walls) < len(processes):
        for index, process in enumerate(processes):
            if index not in walls and process.poll() is not None:
                if process.returncode != 0:
                    raise SystemExit(f"a training run failed (exit {process.returncode})")
                walls[index] = time.perf_counter() - started
        time.sleep(1)
    torch.set_num_threads(1)
    return [result(experiment, name, out, walls[index]) for index, name in enumerate(experiment.recipes)]


def plot(results: list[dict[str, object]], experiment: Experiment, title: str, cores: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for run in results:
        curve = run["curve"]
        assert isinstance(curve, list)
        axis.plot([m for m, _ in curve], [b for _, b in curve], marker="o",
                  label=f"{run['name']} ({int(run['parameters']) / 1e6:.1f} M parameters)")  # type: ignore[call-overload]
    axis.set_xlabel(f"training time on {cores} (minutes)")
    axis.set_ylabel(experiment.curve_label)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def table(results: list[dict[str, object]]) -> list[str]:
    """The RESULTS.md rows."""
    translation = "test_bleu" in results[0]
    scores = ("| test BLEU | test chrF | decoding sentences/s |" if translation
              else "| valid bits/char | valid loss (nats/char) | generation chars/s |")
    rows = [f"| model | parameters | steps | train tokens/s {scores} wall |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        last = r["last_validation"]
        assert isinstance(last, dict)
        cells = ([r["test_bleu"], r["test_chrf"], r["decode_sentences_per_second"]] if translation
                 else [round(last["valid_bits_per_character"], 3), round(last["valid_loss"], 3),
                       r["generation_tokens_per_second"]])
        rows.append(f"| {r['name']} | {int(r['parameters']) / 1e6:.1f} M | {r['steps']:,} | "  # type: ignore[call-overload]
                    f"{r['train_tokens_per_second']:,} | {' | '.join(map(str, cells))} | "
                    f"{int(r['wall_seconds']) / 60:.1f} min |")  # type: ignore[call-overload]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=list(EXPERIMENTS))
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each model")
    parser.add_argument("--validate-every", type=int, default=250, help="steps between the curve's points")
    parser.add_argument("--side-by-side", action="store_true",
                        help="train both at once, each on its own core with one thread")
    parser.add_argument("--out", type=Path, default=None,
                        help="runs directory (default: runs/vs-rnn-<minutes>, language models runs/vs-rnn-lm-<minutes>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for both runs (e.g. data.test=small.tsv for a quick check)")
    args = parser.parse_args()
    experiment = EXPERIMENTS[args.experiment]
    out = args.out or ROOT / "runs" / f"vs-rnn{'' if args.experiment == 'translation' else '-lm'}-{args.minutes:g}"
    run = run_side_by_side if args.side_by_side else run_one_after_the_other
    results = run(experiment, out, args.minutes, args.validate_every, args.set)
    cores = "1 CPU core each, side by side" if args.side_by_side else f"{os.cpu_count()} CPU cores"
    summary = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "side_by_side": args.side_by_side, "minutes": args.minutes, "results": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    figure = ROOT / "docs" / f"transformer-vs-rnn-{args.experiment}-{args.minutes:g}min.png"
    title = ("en→de, Debian gettext corpus" if args.experiment == "translation"
             else "Shakespeare, characters") + f", {args.minutes:g}-minute budget"
    plot(results, experiment, title, cores, figure)
    print("\n".join(table(results)))
    print(f"curves: {figure}")


if __name__ == "__main__":
    main()
