"""Translation quality against a peer, side by side: a plain Hugging Face training loop and a
transformerkit recipe, trained at the same wall-clock budget and thread count on the same split,
scored on the same test set with sacreBLEU.

    python benchmarks/mt_peer.py --recipe configs/en-de-cpu.yaml --minutes 15
    python benchmarks/mt_peer.py --recipe configs/en-zh-cpu.yaml --minutes 15
    python benchmarks/mt_peer.py --recipe configs/en-de-cpu.yaml --minutes 15 --no-peer \\
        --variant default= --variant lr=training.lr_scale=1.0      # ablation rows, ours only
    python benchmarks/mt_peer.py --recipe configs/en-de-cpu.yaml --minutes 15 60   # both budgets, one run

Several budgets are measured in one run: each job trains to the largest and is scored at every
budget on the way (the peer from a copy of its weights taken when its clock passes the budget,
transformerkit by stopping there, scoring, and resuming with ``--resume``, which continues
exactly). Neither schedule depends on the budget (linear warm-up, then inverse square root), so
a model scored at 15 minutes of a 60-minute run is the model a 15-minute run trains.

Every job gets ``--threads`` threads. In the default ``--schedule parallel`` each job runs pinned
to its own cores (``taskset``), two at a time on a 2-core machine; ``sequential`` runs them one
after the other. Tokenizers are learned before the clock starts, for both. Decoding and scoring
come after training and do not count against the budget.

The peer is what a practitioner writes with ``transformers`` in an afternoon: ``MarianMTModel``
(post-norm, sinusoidal positions, scaled and tied embeddings) at the recipe's shape (d_model,
layers, d_ff, heads); dropout 0.1 (``--peer-dropout``); byte-level BPE of the recipe's vocabulary
size learned on the training split; AdamW (lr 7e-4, β (0.9, 0.98), weight decay 1e-4), linear
warm-up for 800 steps then inverse square root; label smoothing 0.1; gradient clipping at 1.0;
64 sentences per batch, length-bucketed; bf16 autocast where the CPU has bf16 hardware, else fp32
(``--peer-precision``: emulated bf16 is many times slower, no practitioner would keep it); the
last weights; ``generate`` with 4 beams.

A recipe whose schedule depends on its budget (``schedule: cosine``, ``warmup_share``, ``save_share``) is trained
once per budget, from scratch; otherwise one run is scored at every budget on the way.

Prints one Markdown table (and writes it, with every job's JSON, to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from transformerkit.backends import machine
from transformerkit.data.parallel import load_parallel
from transformerkit.inference.translation import bleu_tokenizer, score
from transformerkit.tasks import load_recipe

PEER_SENTENCES_PER_BATCH = 64
PEER_PEAK_LR = 7e-4
PEER_WARMUP = 800


# ------------------------------------------------------------------------------------------ peer
def _byte_level_bpe(texts: list[str], vocab_size: int):  # -> tokenizers.Tokenizer
    """The peer's tokenizer, written with ``tokenizers`` directly: the peer uses nothing of
    transformerkit but the data loader and the scorer, so both jobs read and score the same text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _length_bucketed(lengths: list[int], per_batch: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort within windows of 100 batches by length, cut into batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    window = 100 * per_batch
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lengths.__getitem__)
        batches += [chunk[i:i + per_batch] for i in range(0, len(chunk), per_batch)]
    rng.shuffle(batches)
    return batches


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row)
    return out


def train_peer(recipe: str, budgets: list[float], out: Path, dropout: float = 0.1, test_sentences: int | None = None,
               seed: int = 1, precision: str = "auto") -> dict:
    """Train the Hugging Face peer at the recipe's shape for the largest budget (minutes), score it
    at each budget; returns its results."""
    from transformers import MarianConfig, MarianMTModel

    run = load_recipe(recipe)
    d, m = run.data, run.model
    train = load_parallel(d.train, d.train_target, d.source_field, d.target_field)
    test = load_parallel(d.test, d.test_target, d.source_field, d.target_field)
    test.pairs = test.pairs[:test_sentences]
    torch.manual_seed(seed)
    tokenizer = _byte_level_bpe(train.sources + train.targets, d.vocab_size)
    pad, eos = tokenizer.token_to_id("<pad>"), tokenizer.token_to_id("</s>")
    sources = [e.ids + [eos] for e in tokenizer.encode_batch(train.sources)]
    targets = [e.ids + [eos] for e in tokenizer.encode_batch(train.targets)]
    keep = [i for i in range(len(sources)) if max(len(sources[i]), len(targets[i])) <= d.max_length]
    sources, targets = [sources[i] for i in keep], [targets[i] for i in keep]
    config = MarianConfig(
        vocab_size=tokenizer.get_vocab_size(), decoder_vocab_size=tokenizer.get_vocab_size(), d_model=m.d_model,
        encoder_layers=m.num_encoder_layers, decoder_layers=m.num_decoder_layers,
        encoder_attention_heads=m.num_heads, decoder_attention_heads=m.num_heads,
        encoder_ffn_dim=m.d_ff, decoder_ffn_dim=m.d_ff, dropout=dropout, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="relu", max_position_embeddings=512, scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True, pad_token_id=pad, eos_token_id=eos,
        decoder_start_token_id=pad, forced_eos_token_id=eos)
    model = MarianMTModel(config)
    model.train()
    bf16 = precision == "bf16" or (precision == "auto" and machine.native_bf16())
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEER_PEAK_LR, betas=(0.9, 0.98), weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / PEER_WARMUP, math.sqrt(PEER_WARMUP / (s + 1))))
    rng = random.Random(seed)
    lengths = [max(len(s), len(t)) for s, t in zip(sources, targets)]
    steps = tokens = 0
    snapshots: list[dict] = []  # per budget: weights, steps, tokens, seconds
    pending = sorted(budgets)
    started = time.perf_counter()
    while pending:
        for batch in _length_bucketed(lengths, PEER_SENTENCES_PER_BATCH, rng):
            src = _pad([sources[i] for i in batch], pad)
            labels = _pad([targets[i] for i in batch], -100)
            decoder_in = torch.cat([torch.full((len(batch), 1), pad), labels[:, :-1]], dim=1)  # shifted right
            decoder_in = decoder_in.masked_fill(decoder_in.eq(-100), pad)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=src, attention_mask=src.ne(pad), decoder_input_ids=decoder_in).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                   label_smoothing=0.1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            tokens += int(labels.ne(-100).sum())
            seconds = time.perf_counter() - started
            while pending and seconds >= 60 * pending[0]:
                snapshots.append({"minutes": pending.pop(0), "steps": steps, "tokens": tokens, "seconds": seconds,
                                  "weights": {k: v.clone() for k, v in model.state_dict().items()}})
            if not pending:
                break
    model.eval()
    results = []
    for snapshot in snapshots:
        model.load_state_dict(snapshot["weights"])
        hypotheses = _peer_translate(model, tokenizer, test.sources, pad, eos)
        (out / f"hypotheses-{snapshot['minutes']:g}min.txt").write_text("".join(h + "\n" for h in hypotheses),
                                                                         encoding="utf-8")
        results.append({"minutes": snapshot["minutes"], "steps": snapshot["steps"],
                        "train_seconds": round(snapshot["seconds"], 1),
                        "target_tokens_per_second": round(snapshot["tokens"] / snapshot["seconds"], 1),
                        **score(hypotheses, test.targets, d.target_lang)})
    return {"job": "peer", "dropout": dropout, "precision": "bf16" if bf16 else "fp32", "parameters": sum(p.numel() for p in model.parameters()),
            "bleu_tokenizer": bleu_tokenizer(d.target_lang), "budgets": results}


@torch.no_grad()
def _peer_translate(model, tokenizer, texts: list[str], pad: int, eos: int) -> list[str]:
    ids = [e.ids + [eos] for e in tokenizer.encode_batch(texts)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outputs = [""] * len(texts)
    for start in range(0, len(order), 32):
        batch = order[start:start + 32]
        src = _pad([ids[i] for i in batch], pad)
        generated = model.generate(input_ids=src, attention_mask=src.ne(pad), num_beams=4,
                                   max_new_tokens=src.shape[1] + 50, early_stopping=True)
        for i, row in zip(batch, tokenizer.decode_batch(generated.tolist(), skip_special_tokens=True)):
            outputs[i] = row.strip()
    return outputs


# ------------------------------------------------------------------------------------------ ours
def train_ours(recipe: str, budgets: list[float], out: Path, overrides: list[str]) -> dict:
    """``transformerkit train`` to each budget in turn (resuming the same run), scored at each; a
    recipe whose schedule depends on the budget trains a fresh run per budget."""
    training = load_recipe(recipe, overrides).training
    per_budget = training.schedule == "cosine" or training.warmup_share is not None or training.save_share is not None
    results = []
    for i, minutes in enumerate(sorted(budgets)):
        run = out / (f"run-{minutes:g}min" if per_budget else "run")
        command = [sys.executable, "-m", "transformerkit", "train", recipe, *(["--resume"] if i and not per_budget else []),
                   "--set", f"training.max_minutes={minutes}", "--set", f"training.output_dir={run}",
                   "--set", "training.progress=false", *[a for o in overrides for a in ("--set", o)]]
        with (out / "stdout.txt").open("a") as stdout, (out / "stderr.txt").open("a") as stderr:
            subprocess.run(command, check=True, stdout=stdout, stderr=stderr)
        scores = json.loads((run / "results.json").read_text())
        (run / f"results-{minutes:g}min.json").write_text(json.dumps(scores, indent=2) + "\n")
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        stops = [n for n, r in enumerate(log) if r["event"] == "stop"]
        trains = [r for r in log[:stops[-1]] if r["event"] == "train"]
        rate = sum(r["tokens_per_second"] for r in trains) / max(len(trains), 1)
        results.append({"minutes": minutes, "steps": log[stops[-1]]["step"], "target_tokens_per_second": round(rate, 1),
                        **{k: scores[k] for k in ("bleu", "chrf")}})
    return {"job": "ours", "overrides": overrides, "bleu_tokenizer": scores["bleu_tokenizer"], "budgets": results}


# ------------------------------------------------------------------------------------- driver
@dataclass
class Job:
    name: str
    command: list[str]
    out: Path


def _pinned(command: list[str], cores: str, threads: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return ["taskset", "-c", cores, *command], env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="configs/en-de-cpu.yaml")
    parser.add_argument("--minutes", type=float, nargs="+", default=[15.0],
                        help="wall-clock budgets of training; several are measured in one run (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="threads per job")
    parser.add_argument("--schedule", choices=["parallel", "sequential"], default="parallel")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=KEY=VALUE[,KEY=VALUE…]: a transformerkit job with these overrides "
                             "(default: one job named 'transformerkit' with none)")
    parser.add_argument("--no-peer", action="store_true", help="only the transformerkit jobs")
    parser.add_argument("--peer-dropout", type=float, default=0.1, help="the peer's dropout (default 0.1)")
    parser.add_argument("--peer-precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="the peer's autocast: auto = bf16 where the CPU has bf16 hardware, else fp32")
    parser.add_argument("--test-sentences", type=int, default=None,
                        help="score the peer on the first N test pairs only (a quick check of the script)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: run one job in this process
    parser.add_argument("--overrides", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.job is not None:  # a child process
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        result = (train_peer(args.recipe, args.minutes, out, args.peer_dropout, args.test_sentences,
                             precision=args.peer_precision)
                  if args.job == "peer"
                  else train_ours(args.recipe, args.minutes, out, args.overrides))
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return 0

    out = args.out or Path("runs") / f"mt-peer-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    variants = []
    for spec in args.variant or ["transformerkit="]:
        name, _, overrides = spec.partition("=")
        variants.append((name, [o for o in overrides.split(",") if o]))
    peer = f"Hugging Face MarianMT (peer, dropout {args.peer_dropout:g})"
    jobs = [] if args.no_peer else [Job(peer, ["--job", "peer"], out / "peer")]
    jobs += [Job(name, ["--job", "ours", "--overrides", *overrides], out / name) for name, overrides in variants]
    cores = os.cpu_count() or 1
    slots = max(1, cores // args.threads) if args.schedule == "parallel" else 1
    base = [sys.executable, __file__, "--recipe", args.recipe, "--minutes", *map(str, args.minutes),
            "--peer-dropout", str(args.peer_dropout), "--peer-precision", args.peer_precision]
    if args.test_sentences is not None:
        base += ["--test-sentences", str(args.test_sentences)]
    pending = list(jobs)
    running: dict[int, tuple[Job, subprocess.Popen]] = {}  # slot → job
    while pending or running:
        for slot in range(slots):
            if pending and slot not in running:
                job = pending.pop(0)
                cores_of_slot = f"{slot * args.threads}-{(slot + 1) * args.threads - 1}"
                command, env = _pinned([*base, "--out", str(job.out), *job.command], cores_of_slot, args.threads)
                print(f"started {job.name} on cores {cores_of_slot}", file=sys.stderr, flush=True)
                running[slot] = (job, subprocess.Popen(command, env=env))
        time.sleep(5)
        for slot, (job, process) in list(running.items()):
            if process.poll() is not None:
                del running[slot]
                if process.returncode:
                    print(f"{job.name} failed (exit {process.returncode}); see {job.out}", file=sys.stderr)
    rows = []
    for job in jobs:
        path = job.out / "result.json"
        if path.exists():
            rows.append((job.name, json.loads(path.read_text())))
    table = _table(rows, args)
    (out / "table.md").write_text(table)
    print(table)
    return 0


def _table(rows: list[tuple[str, dict]], args: argparse.Namespace) -> str:
    budgets = " and ".join(f"{m:g}" for m in sorted(args.minutes))
    lines = [f"{args.recipe}, {budgets} minutes, {args.threads} thread(s) per job, "
             f"{args.schedule}; test split, beam 4, sacreBLEU",
             "", "| budget | job | steps | target tok/s | BLEU | chrF |", "|---:|---|---:|---:|---:|---:|"]
    for minutes in sorted(args.minutes):
        for name, result in rows:
            for r in result["budgets"]:
                if r["minutes"] == minutes:
                    lines.append(f"| {minutes:g} min | {name} | {r['steps']:,} | {r['target_tokens_per_second']:,.0f} | "
                                 f"{r['bleu']:.2f} | {r['chrf']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
