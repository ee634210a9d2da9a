"""The robustness campaign of issue #35, replayed: hostile inputs against every verb, ``kill -9``
during training, a full disk, and (with ``--serve``) a flood of slow requests against the server.

    python benchmarks/robustness.py                      # hostile inputs + kill -9 + full disk
    python benchmarks/robustness.py --kills 12 --serve   # more kills, and the server flood

Every case runs the real command line (``python -m transformerkit …``) in a subprocess with a
time limit, against tiny model directories (``tests/fixtures/model-dirs-before-task``) and copies
of them damaged file by file. A case ends

    clean      exit 0, or exit 2 with one line on stderr and no traceback
    traceback  a Python traceback, or any other exit status
    hang       still running at the time limit (killed)
    executed   a malicious pickle's payload ran (a marker file appeared)
    lost       (kill -9) a resumed run that does not end with the uninterrupted run's weights, or
               a ``latest`` that does not load

and the table at the end counts them. The disk-full case needs ``mount -t tmpfs`` (root in a
container that allows it); without it the case is reported as skipped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "model-dirs-before-task"
PAIRS = ROOT / "tests" / "fixtures" / "pre-architecture-run" / "data" / "train.tsv"  # 200 pairs: training
TEST = PAIRS.with_name("valid.tsv")  # 20 pairs: evaluate
VERBS = {  # task → one command line per verb that reads such a model directory ({model}, {input})
    "translation": [["translate", "--model", "{model}", "--input", "{input}"],
                    ["evaluate", "--model", "{model}", "--data", str(TEST)],
                    ["plot-attention", "--model", "{model}", "--text", "open the file", "--out", "{work}/a.png"]],
    "language-modeling": [["generate", "--model", "{model}", "--prompt", "open", "--max-new-tokens", "3"]],
    "classification": [["classify", "--model", "{model}", "--input", "{input}"]],
    "question-answering": [["answer", "--model", "{model}", "--question", "what?", "--context", "{input}"]],
    "sentence-embedding": [["embed", "--model", "{model}", "--input", "{input}"]],
}
DAMAGE = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "binary": lambda data: bytes(random.Random(len(data)).randrange(256) for _ in range(64)),
    "json list": lambda data: b"[1, 2]",
    "json null": lambda data: b"null",
    "wrong types": lambda data: json.dumps({k: [v] for k, v in json.loads(data).items()}).encode()
    if data.startswith(b"{") else data[::-1],
}


class Payload:
    """A pickle that, if unpickled by anything but a weights-only loader, creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def run(argv: list[str], timeout: float, marker: Path | None = None, cwd: Path = ROOT) -> str:
    """The outcome of one command line (module docstring)."""
    try:
        process = subprocess.run([sys.executable, "-m", "transformerkit", *argv], capture_output=True, text=True,
                                 timeout=timeout, cwd=cwd, errors="replace")
    except subprocess.TimeoutExpired:
        return "hang"
    if marker is not None and marker.exists():
        return "executed"
    lines = process.stderr.strip().splitlines()
    if "Traceback" in process.stderr or process.returncode not in (0, 2):
        return "traceback"
    errors = [line for line in lines if line.startswith("transformerkit: error")]
    return "clean" if process.returncode == 0 or (len(errors) == 1 and errors[0] == lines[-1]) else "traceback"


def hostile_inputs(work: Path, timeout: float, jobs: int) -> list[tuple[str, str]]:
    """(case, outcome) for every verb against damaged copies of the model directories, hostile
    texts and hostile recipes; ``jobs`` cases at a time."""
    cases: list[tuple[str, list[str], Path | None]] = []  # (case, argv, marker)
    text = work / "input.txt"
    text.write_text("open the file\n", encoding="utf-8")
    for task, commands in VERBS.items():
        for name in sorted(p.name for p in (MODELS / task).iterdir()):
            for how, damage in DAMAGE.items():
                model = work / f"{task}-{name}-{how}".replace(" ", "_")
                shutil.copytree(MODELS / task, model)
                (model / name).write_bytes(damage((MODELS / task / name).read_bytes()))
                cases += [(f"{command[0]} {task}/{name} {how}",
                           [a.format(model=model, input=text, work=work) for a in command], None)
                          for command in commands]
        marker = work / f"executed-{task}"
        model = work / f"{task}-pickle"
        shutil.copytree(MODELS / task, model)
        (model / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
        cases.append((f"{commands[0][0]} {task} malicious pickle",
                      [a.format(model=model, input=text, work=work) for a in commands[0]], marker))
    long_line = work / "long.txt"
    long_line.write_text("open the file and close the window " * 30000 + "\n", encoding="utf-8")  # ~1 MB
    for argv in (["translate", "--model", str(MODELS / "translation"), "--beam", "1", "--input", str(long_line)],
                 ["evaluate", "--model", str(MODELS / "translation"), "--data", str(long_line),
                  "--data-target", str(long_line), "--beam", "1"],
                 ["plot-attention", "--model", str(MODELS / "translation"), "--text", "open the file " * 8000,
                  "--out", str(work / "long.png")],
                 ["translate", "--model", str(MODELS / "translation"), "--input", str(text), "--output", str(text)],
                 ["translate", "--model", str(MODELS / "translation"), "--input", str(text), "--length-penalty", "nan"],
                 ["evaluate", "--model", str(MODELS / "translation"), "--data", str(work / "empty.tsv")],
                 ["generate", "--model", str(MODELS / "language-modeling"), "--prompt", "\udcff"],
                 ["plot-attention", "--model", str(MODELS / "translation"), "--text", "\udcff\udcfe",
                  "--out", str(work / "s.png")]):
        cases.append((" ".join([argv[0], *(a[:30] for a in argv[-2:])]), argv, None))
    (work / "empty.tsv").write_text("", encoding="utf-8")
    for number, recipe in enumerate(["training:\n", "model: [1, 2]\n", "model: 5\n", "model: {preset: [tiny]}\n",
                                     "task: [translation]\n", "1: 2\n", "data: 7\n", "{{{\n", "- a\n- b\n",
                                     f"data: {{train: {PAIRS}, test: missing.tsv}}\n"
                                     f"training: {{max_steps: 2, output_dir: {work}/r}}\n"]):
        path = work / f"recipe-{number}.yaml"
        path.write_text(recipe, encoding="utf-8")
        cases.append((f"train {recipe.strip()[:40]!r}", ["train", str(path), "--set", "training.max_steps=5"], None))
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        outcomes = list(pool.map(lambda case: run(case[1], timeout, case[2]), cases))
    return [(case, outcome) for (case, _, _), outcome in zip(cases, outcomes)]


def tiny_recipe(work: Path, name: str, steps: int) -> Path:
    recipe = {"task": "translation", "data": {"train": str(PAIRS), "vocab_size": 60},
              "model": {"preset": "tiny", "d_model": 16, "d_ff": 32, "num_heads": 2, "dropout": 0.1},
              "training": {"output_dir": str(work / name), "max_steps": steps, "max_tokens": 400, "save_every": 1,
                           "validate_every": 1000, "progress": False, "tensorboard": False, "seed": 3,
                           "precision": "fp32"}}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def kill_nine(work: Path, kills: int, steps: int, timeout: float) -> list[tuple[str, str]]:
    """Train once without interruption; then ``kills`` times: start (or resume) the same run, kill
    it with SIGKILL at a random moment, resume; the last resume must end with the same weights."""
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "transformerkit", "train"]
    subprocess.run([*command, str(tiny_recipe(work, "whole", steps))], env=env, capture_output=True, timeout=timeout,
                   check=True)
    expected = load_file(str(work / "whole" / "checkpoints" / "latest" / "model.safetensors"))
    recipe, rng, results = tiny_recipe(work, "killed", steps), random.Random(0), []
    started = False
    for number in range(kills):
        resume = ["--resume"] if started else []
        process = subprocess.Popen([*command, str(recipe), *resume], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 6.0))  # import, set-up, then some steps and checkpoint writes
        process.send_signal(signal.SIGKILL)
        process.wait()
        started = started or (work / "killed" / "checkpoints" / "latest").exists()
        latest = work / "killed" / "checkpoints" / "latest"
        ok = not latest.exists() or run(["evaluate", "--model", str(latest), "--data", str(TEST), "--beam", "1"],
                                        timeout) == "clean"
        results.append((f"kill -9 #{number + 1}: latest loads", "clean" if ok else "lost"))
    process = subprocess.run([*command, str(recipe), *(["--resume"] if started else [])], env=env,
                             capture_output=True, text=True, timeout=timeout)
    final = work / "killed" / "checkpoints" / "latest" / "model.safetensors"
    same = process.returncode == 0 and final.exists() and all(
        (load_file(str(final))[k] == v).all() for k, v in expected.items())
    results.append((f"kill -9 ×{kills}, then resumed to the end: the uninterrupted run's weights",
                    "clean" if same else "lost"))
    leftovers = [p.name for p in (work / "killed" / "checkpoints").glob(".*tmp-*")]
    results.append(("no .tmp-PID left after the last resume", "lost" if leftovers else "clean"))
    return results


def full_disk(work: Path, timeout: float) -> list[tuple[str, str]]:
    """Train into a 2 MiB tmpfs: the run must stop with one line naming the last complete
    checkpoint, which must load."""
    disk = work / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        return [("full disk (tmpfs)", "skipped")]
    try:
        recipe = tiny_recipe(disk, "run", 200)
        outcome = run(["train", str(recipe)], timeout)
        latest = disk / "run" / "checkpoints" / "latest"
        loads = not latest.exists() or run(["evaluate", "--model", str(latest), "--data", str(TEST), "--beam", "1"],
                                           timeout) == "clean"
        return [("full disk: the run stops in one line", outcome), ("full disk: latest loads", "clean" if loads
                                                                     else "lost")]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def serve_flood(work: Path, timeout: float) -> list[tuple[str, str]]:
    """Slow requests against ``serve``: eight texts longer than the model reads at once, then a
    normal request must be answered, and SIGTERM must stop the server within its grace period."""
    import httpx

    port = 8765
    server = subprocess.Popen([sys.executable, "-m", "transformerkit", "serve", "--model",
                               str(MODELS / "translation"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(timeout=timeout) as client:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                long_text = "open the file and close the window " * 8000  # ~280 KB
                replies = list(pool.map(lambda _: client.post(f"{url}/v1/translate", json={"texts": [long_text]}),
                                        range(8)))
            results.append(("serve: an over-long text gets a 4xx", "clean" if all(400 <= r.status_code < 500
                                                                                   for r in replies) else "traceback"))
            started = time.monotonic()
            normal = client.post(f"{url}/v1/translate", json={"texts": ["save it"]})
            results.append(("serve: a normal request after the flood is answered",
                            "clean" if normal.status_code == 200 and time.monotonic() - started < 30 else "hang"))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
            results.append(("serve: SIGTERM stops the server", "clean"))
        except subprocess.TimeoutExpired:
            server.kill()
            results.append(("serve: SIGTERM stops the server", "hang"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=8, help="kill -9 during training this many times")
    parser.add_argument("--steps", type=int, default=40, help="steps of the tiny training run")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang")
    parser.add_argument("--jobs", type=int, default=2, help="hostile-input cases run at a time")
    parser.add_argument("--serve", action="store_true", help="also flood `transformerkit serve` with slow requests")
    parser.add_argument("--verbose", action="store_true", help="list every case, not only those that failed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        results = hostile_inputs(work, args.timeout, args.jobs) + kill_nine(work, args.kills, args.steps, args.timeout * 3)
        results += full_disk(work, args.timeout)
        if args.serve:
            results += serve_flood(work, args.timeout)
    for case, outcome in results:
        if outcome != "clean" or args.verbose:
            print(f"{outcome:>9}  {case}")
    counts = Counter(outcome for _, outcome in results)
    print("\n| tried | clean | tracebacks | hangs | executed | lost | skipped |\n|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(results)} | {counts['clean']} | {counts['traceback']} | {counts['hang']} | {counts['executed']} "
          f"| {counts['lost']} | {counts['skipped']} |")


if __name__ == "__main__":
    main()
