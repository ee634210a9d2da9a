"""Load test of ``transformerkit serve``: 1, 8 and 32 concurrent clients against three models, with
dynamic batching (``--max-batch-rows 32``) and without it (``--max-batch-rows 1``: one request at a
time through the model), on loopback only, bounded in requests and time.

    python benchmarks/serve_load.py                       # all three models, 1/8/32 clients
    python benchmarks/serve_load.py --quick               # fewer requests per row
    python benchmarks/serve_load.py --translator runs/en-de-…/model   # the demo's trained model

Models (random weights: speed does not depend on them; ``--translator`` takes a trained one):

    char GPT      the Shakespeare character model's shape (4 layers, d_model 256; configs/shakespeare-char.yaml)
    GPT-2 124M    GPT-2's shape and its 50,257-token vocabulary (data/gpt2-tokenizer)
    en→de         the demo's translator shape (preset small, BPE of the bundled corpus), beam 4

Each client sends its next request as soon as the previous one is answered: completions of 32
greedy tokens (``temperature: 0``, so requests share batches) from distinct prompts, or
translations of one distinct sentence each. A row reports requests/s, output tokens/s and the
p50/p99 latency; the ratio column is tokens/s with batching over tokens/s without, same clients.
The server runs in its own process (the real ``transformerkit serve`` command), the clients in
this one (asyncio + httpx).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from transformerkit.backends.machine import describe  # noqa: E402
from transformerkit.checkpoint import save_model_dir  # noqa: E402
from transformerkit.config import preset  # noqa: E402
from transformerkit.data.tokenizer import SubwordTokenizer  # noqa: E402
from transformerkit.generation.config import GenerationConfig  # noqa: E402
from transformerkit.models.decoder_only import DecoderOnlyTransformer  # noqa: E402
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer  # noqa: E402
from transformerkit.training.task import model_config_for  # noqa: E402

CLIENTS = (1, 8, 32)
NEW_TOKENS = 32


def english_lines(count: int) -> list[str]:
    """The first ``count`` distinct English sides of the bundled en→de test split of at most 120
    characters (a prompt, and the completion, fit the character model's 256 positions)."""
    with gzip.open(ROOT / "data" / "gettext-en-de" / "test.tsv.gz", "rt", encoding="utf-8") as lines:
        seen: dict[str, None] = {}
        for line in lines:
            if len(line.split("\t")[0]) <= 120:
                seen.setdefault(line.split("\t")[0], None)
            if len(seen) == count:
                break
    return list(seen)


def build_models(out: Path, translator: Path | None) -> dict[str, tuple[Path, str]]:
    """Model directories to serve: name → (directory, endpoint)."""
    torch.manual_seed(0)
    texts = english_lines(2000)
    characters = SubwordTokenizer.train_characters(texts)
    char_gpt = preset("gpt-small", num_decoder_layers=4, d_model=256, num_heads=4, d_ff=1024, max_positions=256,
                      dropout=0.0)
    save_model_dir(out / "char-gpt", DecoderOnlyTransformer(model_config_for(char_gpt, characters)).eval(),
                   characters, GenerationConfig())
    gpt2_tokens = SubwordTokenizer.from_directory(ROOT / "data" / "gpt2-tokenizer")
    save_model_dir(out / "gpt2", DecoderOnlyTransformer(preset("gpt2", dropout=0.0, attention_dropout=0.0)).eval(),
                   gpt2_tokens, GenerationConfig())
    if translator is None:
        bpe = SubwordTokenizer.train(texts, vocab_size=8000)
        model = EncoderDecoderTransformer(model_config_for(preset("small", norm_position="pre", dropout=0.0), bpe,
                                                           tgt_vocab_size=None)).eval()
        translator = out / "en-de"
        save_model_dir(translator, model, bpe, GenerationConfig(beam=4))
    return {"char GPT": (out / "char-gpt", "completions"), "GPT-2 124M": (out / "gpt2", "completions"),
            "en→de": (translator, "translate")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """``transformerkit serve`` in a subprocess, until the ``with`` ends."""

    def __init__(self, model: Path, batch_rows: int) -> None:
        self.port = free_port()
        self.command = [sys.executable, "-m", "transformerkit", "serve", "--model", str(model), "--port",
                        str(self.port), "--max-batch-rows", str(batch_rows), "--max-wait-ms", "5",
                        "--max-waiting", "256", "--request-timeout", "0"]

    def __enter__(self) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.process = subprocess.Popen(self.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start in 120 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(60)


async def load(url: str, endpoint: str, clients: int, requests: int, texts: list[str], seconds: float
               ) -> dict[str, float]:
    """``clients`` concurrent clients, ``requests`` in all (or until ``seconds`` pass)."""
    latencies: list[float] = []
    tokens = 0
    next_text = iter(range(requests))
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for index in next_text:
            if time.monotonic() > deadline:
                return
            text = texts[index % len(texts)]
            started = time.perf_counter()
            if endpoint == "completions":
                response = await http.post(f"{url}/v1/completions", json={
                    "prompt": text, "max_tokens": NEW_TOKENS, "temperature": 0})
                check(response)
                tokens += response.json()["usage"]["completion_tokens"]
            else:
                response = await http.post(f"{url}/v1/translate", json={"texts": [text]})
                check(response)
                tokens += len(response.json()["translations"][0].split())
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=clients)) as http:
        await client_warmup(http, url, endpoint, texts[0])
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "requests_per_second": len(latencies) / wall,
            "tokens_per_second": tokens / wall, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]}


async def client_warmup(http: httpx.AsyncClient, url: str, endpoint: str, text: str) -> None:
    """One request first, so that no row pays for the server's first-call work."""
    body = ({"prompt": text, "max_tokens": 4, "temperature": 0} if endpoint == "completions"
            else {"texts": [text]})
    check(await http.post(f"{url}/v1/{endpoint}", json=body))


def check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise SystemExit(f"{response.request.url}: {response.status_code} {response.text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 requests per client per row (default: 4)")
    parser.add_argument("--translator", type=Path, default=None, help="a trained en→de model directory")
    parser.add_argument("--seconds", type=float, default=120, help="time limit of one row (default: 120)")
    args = parser.parse_args()
    per_client = 2 if args.quick else 4
    texts = english_lines(512)
    print(f"machine: {describe()}")
    print(f"{NEW_TOKENS} greedy tokens per completion; translation tokens = words of the output\n")
    print("| model | clients | batching | requests | requests/s | tokens/s | p50 s | p99 s | tokens/s ÷ one at a time |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (model, endpoint) in build_models(Path(scratch), args.translator).items():
            for clients in CLIENTS:
                rows = {}
                for batch_rows in (1, 32):  # one server each, one after the other
                    with Served(model, batch_rows) as url:
                        rows[batch_rows] = asyncio.run(load(url, endpoint, clients, max(4, clients * per_client),
                                                            texts, args.seconds))
                for batch_rows, row in rows.items():
                    ratio = rows[32]["tokens_per_second"] / rows[1]["tokens_per_second"]
                    print(f"| {name} | {clients} | {'dynamic (32 rows)' if batch_rows == 32 else 'one at a time'} "
                          f"| {row['requests']} | {row['requests_per_second']:.2f} | {row['tokens_per_second']:.1f} "
                          f"| {row['p50']:.2f} | {row['p99']:.2f} | {f'{ratio:.2f}×' if batch_rows == 32 else ''} |",
                          flush=True)


if __name__ == "__main__":
    main()
