"""``transformerkit serve``: a real uvicorn server on a loopback port, spoken to over HTTP by real
clients (the official ``openai`` package, ``httpx``). Each endpoint answers what the Python API
(and so the command-line verb) gives for the same input and seed; bad requests get a 4xx JSON
error naming the field and leave the server serving."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from transformerkit.checkpoint import save_model_dir
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.image_processing import ImageProcessor, PixelTokenizer
from transformerkit.data.images import png_bytes, read_image
from transformerkit.data.parallel import DataError
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.classification import load_classifier
from transformerkit.inference.embedding import load_sentence_encoder, self_attention
from transformerkit.inference.image_classification import load_image_classifier
from transformerkit.inference.image_generation import load_image_generator
from transformerkit.inference.language_modeling import load_generator
from transformerkit.inference.question_answering import load_answerer
from transformerkit.inference.translation import Translator, cross_attention, load_translator
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.rnn import RNNConfig, RNNEncoderDecoder
from transformerkit.models.vision import VisionTransformer
from transformerkit.serve import ENDPOINTS, create_app
from transformerkit.training.task import model_config_for

uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

TEXTS = ["open the file and save it", "delete this folder now", "print the new image", "close the window",
         "copy the settings to a new file", "the image is saved in the folder"] * 4


@contextmanager
def running(model_dir: Path, app: Any = None, **options: int) -> Iterator[str]:
    """A uvicorn server for ``model_dir`` (or ``app``) in a thread, on a free loopback port; its base URL."""
    app = app or create_app(model_dir, **options)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def save(directory: Path, model: torch.nn.Module, tokenizer: SubwordTokenizer,
         generation: GenerationConfig | None = None) -> Path:
    save_model_dir(directory, model, tokenizer, generation or GenerationConfig())
    return directory


@pytest.fixture(scope="module")
def language_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = SubwordTokenizer.train_characters(TEXTS)
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny"), tokenizer)).eval()
    generation = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=0.9, top_k=0)
    return save(tmp_path_factory.mktemp("lm") / "sonnet-lm", model, tokenizer, generation)


@pytest.fixture(scope="module")
def wordpiece() -> SubwordTokenizer:
    return SubwordTokenizer.train(TEXTS, vocab_size=60)


def encoder(tokenizer: SubwordTokenizer, **head: object) -> EncoderOnlyTransformer:
    torch.manual_seed(0)
    return EncoderOnlyTransformer(preset("minilm-l6", num_encoder_layers=1, d_model=16, d_ff=32, num_heads=2,
                                         vocab_size=tokenizer.vocab_size, **head)).eval()


def test_completions_through_the_openai_client_equal_generate_with_the_same_seed(language_model: Path) -> None:
    with running(language_model) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        (listed,) = client.models.list().data
        assert listed.id == "sonnet-lm"
        reply = client.completions.create(model=listed.id, prompt="open the", max_tokens=9, seed=3,
                                          temperature=0.7, top_p=0.9)
        streamed = client.completions.create(model=listed.id, prompt="open the", max_tokens=9, seed=3,
                                             temperature=0.7, top_p=0.9, stream=True)
        chunks = list(streamed)
        greedy = client.completions.create(model=listed.id, prompt=["open the", "close"], max_tokens=5,
                                           temperature=0, n=2)
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": "sonnet-lm", "task": "completions"}
    expected = load_generator(language_model, max_new_tokens=9, seed=3, temperature=0.7, top_p=0.9,
                              do_sample=True).generate(["open the"])[0]
    (choice,) = reply.choices
    assert choice.text == expected and choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens == len(expected) and reply.usage.prompt_tokens == len("open the")
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected  # streamed: the same text
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason
    plain = load_generator(language_model, max_new_tokens=5, do_sample=False).generate(["open the", "close"])
    assert [c.text for c in sorted(greedy.choices, key=lambda c: c.index)] == [plain[0], plain[0], plain[1], plain[1]]


def test_bad_requests_get_a_json_error_naming_the_field_and_the_server_keeps_serving(
        language_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformerkit.inference.language_modeling import TextGenerator

    app = create_app(language_model, max_request_bytes=2000, max_waiting=0)
    with running(language_model, app) as url:
        def post(body: str | bytes) -> httpx.Response:
            return httpx.post(f"{url}/v1/completions", content=body, headers={"content-type": "application/json"},
                              timeout=30)

        answers = {
            "malformed": post(b'{"prompt": "open'),
            "unknown field": post(json.dumps({"prompt": "a", "temprature": 1})),
            "wrong type": post(json.dumps({"prompt": "a", "max_tokens": "many"})),
            "out of range": post(json.dumps({"prompt": "a", "n": 0})),
            "not an object": post(b"[1, 2]"),
            "too large": post(json.dumps({"prompt": "a" * 5000})),
            "too long for the model": post(json.dumps({"prompt": "a" * 400, "max_tokens": 4})),
        }
        wrong_path = httpx.get(f"{url}/v1/nothing")
        wrong_method = httpx.get(f"{url}/v1/completions")
        monkeypatch.setattr(TextGenerator, "generate", lambda self, texts: 1 / 0)
        failed = post(json.dumps({"prompt": "a"}))
        monkeypatch.undo()
        with app.state.server.lock:  # the model busy with another request, and no room to wait
            busy = post(json.dumps({"prompt": "a"}))
        after = post(json.dumps({"prompt": "open", "max_tokens": 3}))
        metrics = httpx.get(f"{url}/metrics").text
    status = {name: r.status_code for name, r in answers.items()}
    assert status == {"malformed": 400, "unknown field": 400, "wrong type": 400, "out of range": 400,
                      "not an object": 400, "too large": 413, "too long for the model": 400}
    errors = {name: r.json()["error"] for name, r in answers.items()}
    assert "not valid JSON" in errors["malformed"]["message"]
    assert errors["unknown field"]["param"] == "temprature" and errors["wrong type"]["param"] == "max_tokens"
    assert errors["out of range"]["param"] == "n" and "2000 bytes" in errors["too large"]["message"]
    assert "max_positions" in errors["too long for the model"]["message"]
    assert (wrong_path.status_code, wrong_method.status_code) == (404, 405) and "error" in wrong_path.json()
    assert failed.status_code == 500 and "ZeroDivisionError" in failed.json()["error"]["message"]
    assert busy.status_code == 429 and "busy" in busy.json()["error"]["message"]
    assert after.status_code == 200 and len(after.json()["choices"]) == 1
    assert 'transformerkit_requests_total{path="/v1/completions",status="200"} 1.0' in metrics
    assert 'transformerkit_requests_total{path="other",status="404"} 1.0' in metrics
    assert 'transformerkit_requests_total{path="/v1/completions",status="413"} 1.0' in metrics
    generated = after.json()["usage"]["completion_tokens"]
    assert f"transformerkit_generated_tokens_total {float(generated)}" in metrics


def hostile_requests(count: int, seed: int = 0) -> Iterator[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, headers): random JSON of wrong types and ranges for every field, random
    bytes, truncated and non-UTF-8 bodies, wrong content types, unknown paths and methods."""
    import random

    rng = random.Random(seed)
    values = [None, True, -1, 0, 2 ** 70, 1e308, float("nan"), "", "x" * 300, "\u0000\u202e\ud7ff", [], [1, "a"],
              {"a": 1}, ["ok", None], 0.5, 3, "open the", ["open", "the"], -0.0]
    fields = ["prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stop", "seed", "model", "user",
              "input", "texts", "beam", "logprobs", "echo"]
    paths = ["/v1/completions"] * 6 + ["/v1/embeddings", "/v1/translate", "/health", "/v1/models", "/metrics",
                                       "/v1/completions/x", "/%00", "/v1/../etc/passwd"]
    for _ in range(count):
        path, method = rng.choice(paths), rng.choice(["POST"] * 8 + ["GET", "PUT", "DELETE"])
        headers = {"content-type": rng.choice(["application/json"] * 5 + ["text/plain", "application/x-www-form"
                                                                        "-urlencoded", "multipart/form-data"])}
        kind = rng.random()
        if kind < 0.6:  # JSON of wrong types and ranges; the generating ones kept short
            body = {f: rng.choice(values) for f in rng.sample(fields, rng.randint(0, 5))}
            if isinstance(body.get("max_tokens"), int) and 0 < body["max_tokens"] < 2 ** 63:
                body["max_tokens"] = min(body["max_tokens"], 4)
            if body.get("n") not in (None, 0, -1):
                body["n"] = 1
            raw = json.dumps(body, allow_nan=True).encode()
        elif kind < 0.75:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        elif kind < 0.9:
            raw = json.dumps({"prompt": "open the file", "max_tokens": 2}).encode()[:rng.randint(0, 30)]
        else:
            raw = "{\"prompt\": \"".encode() + bytes([0xff, 0xfe, 0x80]) + b'"}'
        yield method, path, raw, headers


def test_hostile_requests_get_json_errors_and_the_server_keeps_serving(language_model: Path) -> None:
    tried, statuses = 0, set()
    with running(language_model) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            for method, path, body, headers in hostile_requests(500):
                response = client.request(method, path, content=body, headers=headers)
                tried += 1
                statuses.add(response.status_code)
                assert response.status_code < 500, (method, path, body, response.text)
                assert "Traceback" not in response.text
                if response.status_code >= 400:
                    assert isinstance(response.json()["error"]["message"], str)
            health = client.get("/health")
            normal = client.post("/v1/completions", json={"prompt": "open", "max_tokens": 3})
    assert tried == 500 and {400, 404, 405} <= statuses
    assert health.json()["status"] == "ok" and normal.status_code == 200 and len(normal.json()["choices"]) == 1


def test_a_stream_whose_client_goes_away_stops_decoding_and_frees_the_model(
        language_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformerkit.inference.language_modeling import TextGenerator

    steps: list[int] = []

    def slow_stream(self: TextGenerator, texts: list[str]) -> Iterator[list[str]]:
        self.finish_reasons = ["length"] * len(texts)
        for step in range(1000):  # 10 s if nobody stops it
            time.sleep(0.01)
            steps.append(step)
            yield ["x"] * len(texts)

    monkeypatch.setattr(TextGenerator, "stream", slow_stream)
    app = create_app(language_model)
    with running(language_model, app) as url:
        with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "a", "stream": True}) as response:
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["choices"][0]["text"] == "x"
        deadline = time.monotonic() + 5
        while app.state.server.lock.locked():  # freed once the decoding has stopped
            assert time.monotonic() < deadline, "the model is still held after the client went away"
            time.sleep(0.01)
        stopped_at = len(steps)
        time.sleep(0.2)
        assert len(steps) == stopped_at < 1000  # no step after that
        monkeypatch.undo()
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "a", "max_tokens": 2}).status_code == 200


def test_concurrent_requests_share_batches_and_get_what_each_would_get_alone(language_model: Path,
                                                                            tmp_path: Path) -> None:

    tokenizer = SubwordTokenizer.train(TEXTS, vocab_size=60)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(model_config_for(preset("tiny", d_model=32, d_ff=64), tokenizer)).eval()
    translator_dir = save(tmp_path / "translator", model, tokenizer, GenerationConfig(beam=2, max_length_offset=6))
    sentences = [[t] for t in TEXTS[:6]] + [TEXTS[6:9]]
    prompts = ["open the", "close", "print the new", "s", "delete this"] * 2
    with running(translator_dir, max_wait_ms=300) as url, ThreadPoolExecutor(8) as pool:
        translated = list(pool.map(lambda texts: httpx.post(f"{url}/v1/translate", json={"texts": texts},
                                                            timeout=60).json()["translations"], sentences))
        translate_rows = httpx.get(f"{url}/metrics").text
    with running(language_model, max_wait_ms=300) as url, ThreadPoolExecutor(10) as pool:
        completed = list(pool.map(lambda prompt: httpx.post(f"{url}/v1/completions", timeout=60, json={
            "prompt": prompt, "max_tokens": 6, "temperature": 0}).json()["choices"][0]["text"], prompts))
        complete_rows = httpx.get(f"{url}/metrics").text
    alone = load_translator(translator_dir)
    assert translated == [alone.translate(texts) for texts in sentences]
    generator = load_generator(language_model, max_new_tokens=6, do_sample=False)
    assert completed == [generator.generate([prompt])[0] for prompt in prompts]
    for metrics, requests in ((translate_rows, len(sentences)), (complete_rows, len(prompts))):
        batches = float(next(line.split()[-1] for line in metrics.splitlines()
                             if line.startswith("transformerkit_batch_rows_count")))
        assert batches < requests  # some requests shared a batch


def test_a_batch_answers_its_other_requests_when_one_is_cancelled(tmp_path: Path) -> None:
    import asyncio

    from transformerkit.serve.common import Server

    async def scenario() -> tuple[list[str], bool]:
        server = Server(tmp_path, max_wait_ms=50)
        doubled = lambda texts: [t + t for t in texts]  # noqa: E731
        dropped = asyncio.ensure_future(server.batched("k", ["c"], doubled))  # first in the batch
        kept = asyncio.ensure_future(server.batched("k", ["a", "b"], doubled))
        await asyncio.sleep(0)
        dropped.cancel()  # its client went away while the batch gathered
        result = await asyncio.wait_for(kept, 10)
        full = await asyncio.wait_for(server.batched("k", ["x"] * 40, doubled), 10)  # over max_batch_rows: at once
        return result, len(full) == 40

    assert asyncio.run(scenario()) == (["aa", "bb"], True)


def test_requests_that_arrive_while_the_model_is_busy_go_together_in_its_next_batch(tmp_path: Path) -> None:
    """The batch after a running one takes every request that arrived meanwhile (up to
    max_batch_rows), not only those of the first max_wait_ms: under load, batches stay full."""
    import asyncio

    from transformerkit.serve.common import Server

    async def scenario() -> list[list[str]]:
        server = Server(tmp_path, max_wait_ms=1, max_batch_rows=4)
        batches: list[list[str]] = []

        def work(texts: list[str]) -> list[str]:
            batches.append(list(texts))
            time.sleep(0.05)  # the model at work: every request below arrives meanwhile
            return texts

        first = asyncio.ensure_future(server.batched("k", ["a"], work))
        await asyncio.sleep(0.02)  # the first batch runs
        later = []
        for text in "bcdefg":
            later.append(asyncio.ensure_future(server.batched("k", [text], work)))
            await asyncio.sleep(0.003)  # more than max_wait_ms apart
        await asyncio.wait_for(asyncio.gather(first, *later), 10)
        return batches

    assert asyncio.run(scenario()) == [["a"], ["b", "c", "d", "e"], ["f", "g"]]


def test_embeddings_through_the_openai_client_equal_embed(wordpiece: SubwordTokenizer, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = save(tmp_path / "encoder", encoder(wordpiece), wordpiece)
    texts = ["open the file", "delete this folder now"]
    with running(model_dir) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        as_base64 = client.embeddings.create(model="encoder", input=texts)  # the client's default encoding
        as_floats = httpx.post(f"{url}/v1/embeddings", json={"input": texts[0], "encoding_format": "float"}).json()
    expected = load_sentence_encoder(model_dir).encode(texts)
    received = torch.tensor([d.embedding for d in sorted(as_base64.data, key=lambda d: d.index)])
    torch.testing.assert_close(received, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(as_floats["data"][0]["embedding"]), expected[0], atol=1e-6, rtol=0)
    (tmp_path / "lines.txt").write_text("\n".join(texts) + "\n")
    assert main(["embed", "--model", str(model_dir), "--input", str(tmp_path / "lines.txt")]) == 0
    cli = torch.tensor([json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()])
    torch.testing.assert_close(received, cli, atol=1e-6, rtol=0)


def test_classify_and_answer_return_what_the_python_api_gives(wordpiece: SubwordTokenizer, tmp_path: Path) -> None:
    classifier_dir = save(tmp_path / "classifier", encoder(wordpiece, labels=["negative", "neutral", "positive"]),
                          wordpiece)
    answerer_dir = save(tmp_path / "answerer", encoder(wordpiece, span_head=True), wordpiece)
    context = "the image is saved in the folder and the file is open"
    with running(classifier_dir) as url:
        labels = httpx.post(f"{url}/v1/classify", json={"texts": TEXTS[:3]}).json()["results"]
        empty = httpx.post(f"{url}/v1/classify", json={"texts": []})
    with running(answerer_dir) as url:
        answer = httpx.post(f"{url}/v1/answer", json={"question": "where is the image", "context": context}).json()
    probabilities = load_classifier(classifier_dir).probabilities(TEXTS[:3])
    for result, row in zip(labels, probabilities.tolist()):
        assert result["probabilities"] == pytest.approx(dict(zip(["negative", "neutral", "positive"], row)), abs=1e-6)
        assert result["probability"] == pytest.approx(max(row), abs=1e-6)
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "texts"
    expected = load_answerer(answerer_dir).answer("where is the image", context)
    assert answer["answer"] == expected.text == context[answer["start"]:answer["end"]]
    assert answer["score"] == pytest.approx(expected.score, abs=1e-5)


def test_translate_returns_what_translate_gives_and_other_models_are_named(
        language_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = SubwordTokenizer.train(TEXTS, vocab_size=60)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(model_config_for(preset("tiny", d_model=32, d_ff=64), tokenizer)).eval()
    model_dir = save(tmp_path / "translator", model, tokenizer, GenerationConfig(beam=2, max_length_offset=6))
    texts = ["open the file", "", "close the window"]
    with running(model_dir) as url:
        default = httpx.post(f"{url}/v1/translate", json={"texts": texts}).json()["translations"]
        beam3 = httpx.post(f"{url}/v1/translate", json={"texts": texts, "beam": 3}).json()["translations"]
        refused = httpx.post(f"{url}/v1/completions", json={"prompt": "a"})
    assert default == load_translator(model_dir).translate(texts) and default[1] == ""
    assert beam3 == load_translator(model_dir, beam=3).translate(texts)
    assert refused.status_code == 404
    image_model = tmp_path / "not-served"
    image_model.mkdir()
    config = {"model_type": "transformerkit-vit", **preset("vit-28").to_dict()}
    (image_model / "config.json").write_text(json.dumps(config))
    assert main(["serve", "--model", str(image_model)]) == 2  # no weights: named in one line
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not-served" in error and "Traceback" not in error
    monkeypatch.delitem(ENDPOINTS, "image-classification")  # a task that no endpoint serves
    assert main(["serve", "--model", str(image_model)]) == 2
    assert "no HTTP endpoints serve this kind of model" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dir), "--port", "70000"]) == 2
    assert "--port must be in 1..65535, got 70000" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ images
def test_classify_image_returns_what_classify_image_gives_and_names_a_file_that_is_not_an_image(
        tmp_path: Path) -> None:
    labels = ["coat", "sneaker", "bag"]
    torch.manual_seed(0)
    model = VisionTransformer(preset("vit-28-tiny", image_size=8, patch_size=4, labels=labels)).eval()
    model_dir = save(tmp_path / "vit", model, ImageProcessor(8, [0.3], [0.4]))
    generator = np.random.default_rng(0)
    paths = []
    for index, shape in enumerate([(8, 8), (12, 12, 3), (20, 9)]):  # grey, colour (made grey), resized
        paths.append(tmp_path / f"{index}.png")
        paths[-1].write_bytes(png_bytes(generator.integers(0, 256, shape, dtype=np.uint8)))
    uploads = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
    with running(model_dir) as url:
        with ThreadPoolExecutor(3) as pool:  # concurrent requests, batched together
            answers = list(pool.map(lambda files: httpx.post(f"{url}/v1/classify-image", files=files).json(),
                                    [uploads, uploads[1:], uploads[:1]]))
        broken = httpx.post(f"{url}/v1/classify-image",
                            files=[uploads[0], ("file", ("notes.png", b"%PDF-1.4", "image/png"))])
        no_file = httpx.post(f"{url}/v1/classify-image", data={"other": "x"})
        after = httpx.post(f"{url}/v1/classify-image", files=uploads[:1])
    classifier = load_image_classifier(model_dir)
    expected = classifier.probabilities(torch.stack([read_image(p, 1, 8) for p in paths])).tolist()
    assert [r["file"] for r in answers[0]["results"]] == ["0.png", "1.png", "2.png"]
    for results, rows in zip([a["results"] for a in answers], [expected, expected[1:], expected[:1]]):
        for result, row in zip(results, rows, strict=True):
            assert result["probabilities"] == pytest.approx(dict(zip(labels, row)), abs=1e-6)
            assert result["label"] == labels[int(np.argmax(row))]
    assert [(r["label"], pytest.approx(r["probability"], abs=1e-6)) for r in answers[0]["results"]] == \
        classifier.classify_files(paths)
    assert broken.status_code == 400
    assert broken.json()["error"]["message"].startswith("file[1] (notes.png): unreadable image")
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    assert after.status_code == 200


def test_an_image_bomb_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")  # 81 megapixels in ~80 KB
    with pytest.raises(DataError, match="upload: 9000×9000 pixels is over the limit of 64,000,000"):
        read_image(buffer.getvalue(), 1, 8, "upload")


def test_generate_images_with_a_seed_are_those_of_the_generator(tmp_path: Path) -> None:
    tokenizer = PixelTokenizer(image_size=4, levels=4, labels=["zero", "one"])
    torch.manual_seed(0)
    config = preset("gpt-tiny", vocab_size=tokenizer.vocab_size, max_positions=1 + tokenizer.pixels, pad_id=0,
                    bos_id=tokenizer.levels, eos_id=0)
    model_dir = save(tmp_path / "pixels", DecoderOnlyTransformer(config).eval(), tokenizer)
    with running(model_dir) as url:
        drawn = httpx.post(f"{url}/v1/generate-images", json={"class": "one", "n": 3, "seed": 7}).json()
        grid = httpx.post(f"{url}/v1/generate-images", json={"class": 1, "n": 3, "seed": 7, "response_format": "png",
                                                             "columns": 2, "scale": 2})
        greedy = httpx.post(f"{url}/v1/generate-images", json={"class": "zero", "n": 2, "temperature": 0}).json()
        unknown = httpx.post(f"{url}/v1/generate-images", json={"class": "two"})
        too_many = httpx.post(f"{url}/v1/generate-images", json={"class": "one", "n": 65})
    expected = load_image_generator(model_dir, do_sample=True, seed=7).generate([1] * 3)
    received = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d["b64_json"])))) for d in drawn["data"]]
    assert drawn["class"] == "one" and len(received) == 3
    assert all(np.array_equal(image, want[0].numpy()) for image, want in zip(received, expected, strict=True))
    greedy_expected = load_image_generator(model_dir, do_sample=False).generate([0] * 2)
    greedy_received = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d["b64_json"])))) for d in greedy["data"]]
    assert all(np.array_equal(a, b[0].numpy()) for a, b in zip(greedy_received, greedy_expected, strict=True))
    assert grid.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(grid.content)).size == ((2 * 5 + 1) * 2, (2 * 5 + 1) * 2)  # 2×2 cells, 1-px gaps
    assert unknown.status_code == 400 and "two" in unknown.json()["error"]["message"]
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"


# --------------------------------------------------------------------------------- attention, page
def test_translate_returns_the_cross_attention_plot_attention_draws_and_caps_the_length(tmp_path: Path) -> None:
    tokenizer = SubwordTokenizer.train(TEXTS, vocab_size=60)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(model_config_for(preset("tiny", d_model=32, d_ff=64), tokenizer)).eval()
    model_dir = save(tmp_path / "translator", model, tokenizer, GenerationConfig(beam=2, max_length_offset=6))
    with running(model_dir) as url:
        answer = httpx.post(f"{url}/v1/translate", json={"texts": ["open the file", "close the window"],
                                                         "attention": True, "layer": 0, "head": 1}).json()
        mean = httpx.post(f"{url}/v1/translate", json={"texts": ["open the file"], "attention": True}).json()
        capped = httpx.post(f"{url}/v1/translate", json={"texts": ["open the file"], "max_length": 2}).json()
        no_layer = httpx.post(f"{url}/v1/translate", json={"texts": ["a"], "attention": True, "layer": 2})
        no_head = httpx.post(f"{url}/v1/translate", json={"texts": ["a"], "attention": True, "head": 4})
        page = httpx.get(f"{url}/")
    translator = load_translator(model_dir)
    for text, translation, attention in zip(["open the file", "close the window"], answer["translations"],
                                            answer["attention"], strict=True):
        weights, source, target = cross_attention(translator, text, translation, layer=0, head=1)
        assert (attention["source_tokens"], attention["target_tokens"]) == (source, target)
        torch.testing.assert_close(torch.tensor(attention["weights"]), weights, atol=1e-5, rtol=0)
    weights, _, _ = cross_attention(translator, "open the file", mean["translations"][0])  # last layer, mean of heads
    torch.testing.assert_close(torch.tensor(mean["attention"][0]["weights"]), weights, atol=1e-5, rtol=0)
    short = Translator(translator.model, translator.tokenizer, replace(translator.generation, max_length=2))
    assert capped["translations"] == short.translate(["open the file"]) != mean["translations"]
    assert no_layer.status_code == 400 and no_layer.json()["error"]["message"].startswith(
        "layer: the model has 2 decoder layers")
    assert no_head.status_code == 400 and no_head.json()["error"]["message"].startswith("head: the model has 4 heads")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '"task": "translation"' in page.text and '"layers": 2, "heads": 4' in page.text
    assert "<title>transformerkit: translator</title>" in page.text


def test_a_recurrent_translator_is_served_with_its_one_attention(tmp_path: Path) -> None:
    tokenizer = SubwordTokenizer.train(TEXTS, vocab_size=60)
    torch.manual_seed(0)
    model = RNNEncoderDecoder(RNNConfig(d_model=16, num_encoder_layers=1, num_decoder_layers=2,
                                        vocab_size=tokenizer.vocab_size)).eval()
    model_dir = save(tmp_path / "rnn", model, tokenizer, GenerationConfig(beam=2, max_length_offset=4))
    with running(model_dir) as url:
        answer = httpx.post(f"{url}/v1/translate", json={"texts": ["open the file"], "attention": True}).json()
        no_layer = httpx.post(f"{url}/v1/translate", json={"texts": ["a"], "attention": True, "layer": 1})
    translator = load_translator(model_dir)
    assert answer["translations"] == translator.translate(["open the file"])
    weights, _, _ = cross_attention(translator, "open the file", answer["translations"][0])
    torch.testing.assert_close(torch.tensor(answer["attention"][0]["weights"]), weights, atol=1e-5, rtol=0)
    assert no_layer.status_code == 400 and no_layer.json()["error"]["message"].startswith(
        "layer: the model has 1 decoder layers")


def test_attention_of_a_text_encoder_is_its_self_attention(wordpiece: SubwordTokenizer, tmp_path: Path) -> None:
    model = encoder(wordpiece, labels=["a", "b"])
    model_dir = save(tmp_path / "classifier", model, wordpiece)
    with running(model_dir) as url:
        answer = httpx.post(f"{url}/v1/attention", json={"text": "open the file", "layer": 0, "head": 1}).json()
        too_deep = httpx.post(f"{url}/v1/attention", json={"text": "open the file", "layer": 5})
    weights, tokens = self_attention(load_classifier(model_dir).model, wordpiece, "open the file", 0, 1)
    assert answer["tokens"] == tokens == wordpiece.tokens(wordpiece.encode_for_encoder(["open the file"], 512)[0])
    torch.testing.assert_close(torch.tensor(answer["weights"]), weights, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(tokens)))
    assert too_deep.status_code == 400 and too_deep.json()["error"]["param"] is None
    assert too_deep.json()["error"]["message"].startswith("layer: the model has 1 encoder layers")
