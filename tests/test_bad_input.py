"""Bad input ends in one line that names the file or field, and nothing is lost (issue #35's
measured cases): text that is not valid Unicode, damaged tokenizer, weights and training-state
files, recipe sections of the wrong shape, files missing until the end, inputs longer than the
model reads, a full disk and what killed writers leave behind."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from transformerkit.checkpoint import (CheckpointError, load_model_dir, load_training_state, load_weights,
                                       remove_stale_temporaries, save_checkpoint)
from transformerkit.cli import main
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.inference.translation import SOURCE_LIMIT, load_translator

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELS = FIXTURES / "model-dirs-before-task"
PAIRS = FIXTURES / "pre-architecture-run" / "data" / "train.tsv"


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("transformerkit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------- text
def test_a_lone_surrogate_is_a_value_error_saying_where() -> None:
    tokenizer = SubwordTokenizer.load(MODELS / "translation" / "tokenizer.json")
    with pytest.raises(ValueError, match=r"text 2 is not valid Unicode: a lone surrogate U\+DCFF at character 4"):
        tokenizer.encode(["fine", "open\udcff"])


@pytest.mark.parametrize("argv", [
    ["generate", "--model", str(MODELS / "language-modeling"), "--prompt", "\udcff"],  # $'\xff' from a shell
    ["plot-attention", "--model", str(MODELS / "translation"), "--text", "\udcff\udcfe", "--out", "unused.png"],
])
def test_invalid_utf8_on_the_command_line_is_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "is not valid Unicode: a lone surrogate U+DCFF" in one_line_error(capsys)


def test_a_lone_surrogate_in_a_request_is_a_400_naming_the_field() -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transformerkit.serve import create_app

    with TestClient(create_app(MODELS / "language-modeling")) as client:
        reply = client.post("/v1/completions", content=b'{"prompt": "\\ud800", "max_tokens": 2}',
                            headers={"content-type": "application/json"})
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == "prompt" and "lone surrogate U+D800" in reply.json()["error"]["message"]
        assert client.post("/v1/completions", json={"prompt": "open", "max_tokens": 2}).status_code == 200


# ------------------------------------------------------------------------- damaged model files
@pytest.mark.parametrize("content, reason", [
    (b"", "tokenizer.json: not a valid tokenizer file"),
    (b'{"version": "1.0", "model": {', "tokenizer.json: not a valid tokenizer file"),
    (b"\x83\xff\x00\x01binary", "tokenizer.json: not a valid tokenizer file"),
    (b'{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null, '
     b'"pre_tokenizer": null, "post_processor": null, "decoder": null, "model": {"type": "BPE", "vocab": '
     b'{"a": 0}, "merges": []}}', "tokenizer.json: tokenizer lacks the special tokens"),
])
def test_a_damaged_tokenizer_is_one_line_naming_it(content: bytes, reason: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(MODELS / "translation", tmp_path / "m")
    (tmp_path / "m" / "tokenizer.json").write_bytes(content)
    (tmp_path / "in.txt").write_text("open the file\n", encoding="utf-8")
    assert main(["translate", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "in.txt")]) == 2
    assert reason in one_line_error(capsys)


def test_truncated_weights_are_named_damaged_not_another_model(tmp_path: Path) -> None:
    shutil.copytree(MODELS / "translation", tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    model, _, _ = load_model_dir(MODELS / "translation")
    with pytest.raises(CheckpointError, match="model.safetensors: not a complete safetensors file, damaged or truncated"):
        load_weights(model, weights)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x04K\x05."])
def test_a_damaged_training_state_is_named(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "training_state.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="training_state.pt: damaged or not a training state"):
        load_training_state(tmp_path)


# --------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe, overrides, error", [
    ("training:\n", ["training.max_steps=5"], "data.train is required"),  # the section is filled, not a TypeError
    ("training: 5\n", ["training.max_steps=5"], "training must be a mapping of settings, got int"),
    ("model: [1, 2]\n", [], "model must be a mapping of settings (preset: …, d_model: …), got list"),
    ("model: 5\n", [], "model must be a mapping of settings (preset: …, d_model: …), got int"),
    ("model:\n", ["model.preset=tiny"], "data.train is required"),
    ("model: {preset: [tiny]}\n", [], "model.preset: unknown preset ['tiny']"),
    ("task: [translation]\n", [], "task: unknown task ['translation']"),
    ("1: 2\n", [], "1: a configuration key must be a name, got int"),
    ("data: {train: x.tsv, 7: y}\n", [], "data.7: a configuration key must be a name, got int"),
])
def test_recipes_of_the_wrong_shape_are_one_line(recipe: str, overrides: list[str], error: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "recipe.yaml").write_text(recipe, encoding="utf-8")
    assert main(["train", str(tmp_path / "recipe.yaml"), *[a for o in overrides for a in ("--set", o)]]) == 2
    assert error in one_line_error(capsys)


@pytest.mark.parametrize("overrides, error", [
    (["data.vocab_size=1000000000"], "data.vocab_size must be in [16, 2,097,152], got 1,000,000,000"),
    (["training.adam_betas=[0.9, 0.98, 0.5]"], "training.adam_betas must be two numbers in [0, 1), got [0.9, 0.98, 0.5]"),
    (["training.lr_scale=.nan"], "training.lr_scale has an invalid value '.nan'"),
])
def test_settings_out_of_range_stop_before_anything_runs(overrides: list[str], error: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A vocabulary of 10⁹ used to abort the process inside the BPE trainer (88-line native backtrace)."""
    recipe = {"task": "translation", "data": {"train": str(PAIRS), "vocab_size": 60}, "model": {"preset": "tiny"},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "progress": False}}
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe), encoding="utf-8")
    assert main(["train", str(tmp_path / "recipe.yaml"), *[a for o in overrides for a in ("--set", o)]]) == 2
    assert error in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_recipe_that_is_not_utf8_is_named_by_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    (tmp_path / "recipe.yaml").write_bytes(b"task: translation\ndata: {train: \xff.tsv}\n")
    assert main(["train", str(tmp_path / "recipe.yaml")]) == 2
    assert "recipe.yaml: line 2 is not UTF-8 text (byte b'\\xff')" in one_line_error(capsys)


def test_what_overrides_what_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A preset set on the command line over a recipe with model fields, and a token budget that
    holds one example per batch, train — with a warning each."""
    recipe = {"task": "translation", "data": {"train": str(PAIRS), "vocab_size": 60},
              "model": {"preset": "tiny", "d_model": 16, "d_ff": 32, "num_heads": 2},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "progress": False,
                           "tensorboard": False, "max_tokens": 1, "precision": "fp32"}}
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe), encoding="utf-8")
    assert main(["train", str(tmp_path / "recipe.yaml"), "--set", "model.preset=small"]) == 0
    err = capsys.readouterr().err
    assert "--set model.preset=small: the recipe's model fields d_model, d_ff, num_heads still apply" in err
    assert "training.max_tokens 1 holds one example per batch" in err
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["d_model"] == 16


@pytest.mark.parametrize("kind, change, message", [
    ("int64", lambda t: t.long(), "is stored as I64, not as floating-point weights (and 32 more)"),
    ("nan", lambda t: torch.full_like(t, float("nan")), "holds NaN or infinite values (a diverged run?)"),
])
def test_weights_of_the_wrong_kind_are_refused(kind: str, change: object, message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """int64 weights used to load and translate to nothing, NaN weights to end in 'max() arg is an
    empty sequence'."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(MODELS / "translation", tmp_path / kind)
    weights = load_file(str(tmp_path / kind / "model.safetensors"))
    save_file({k: change(v).contiguous() for k, v in weights.items()}, str(tmp_path / kind / "model.safetensors"))
    (tmp_path / "in.txt").write_text("open the file\n", encoding="utf-8")
    assert main(["translate", "--model", str(tmp_path / kind), "--input", str(tmp_path / "in.txt")]) == 2
    assert message in one_line_error(capsys)


def test_half_precision_weights_are_converted_with_a_warning(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    shutil.copytree(MODELS / "translation", tmp_path / "fp16")
    weights = load_file(str(tmp_path / "fp16" / "model.safetensors"))
    save_file({k: v.half() for k, v in weights.items()}, str(tmp_path / "fp16" / "model.safetensors"))
    with pytest.warns(UserWarning, match=r"weights stored as F16 \(33 tensors\) were converted to float32"):
        model, _, _ = load_model_dir(tmp_path / "fp16")
    assert next(model.parameters()).dtype == torch.float32


def test_an_output_that_is_a_file_is_kept_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("precious", encoding="utf-8")
    assert main(["export", "--model", str(MODELS / "translation"), "--out", str(tmp_path / "out")]) == 2
    assert "out is a file, not a directory: nothing was written" in one_line_error(capsys)
    assert (tmp_path / "out").read_text(encoding="utf-8") == "precious"


@pytest.mark.parametrize("key, value, message", [
    ("eos_token_id", [], "eos_id has an invalid value []"),
    ("activation_function", ["gelu"], "unsupported activation_function ['gelu']"),
])
def test_hugging_face_configs_with_list_values_are_one_line(key: str, value: object, message: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from transformerkit.config import preset
    from transformerkit.interop.gpt2 import save_hf_gpt2
    from transformerkit.models.decoder_only import DecoderOnlyTransformer

    save_hf_gpt2(DecoderOnlyTransformer(preset("gpt-tiny", vocab_size=100)), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, key: value}), encoding="utf-8")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert message in one_line_error(capsys)


def test_a_missing_test_file_stops_the_run_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = {"task": "translation", "data": {"train": str(PAIRS), "test": str(tmp_path / "missing.tsv"),
                                              "vocab_size": 60},
              "model": {"preset": "tiny"}, "training": {"output_dir": str(tmp_path / "run"), "max_steps": 50,
                                                        "progress": False, "tensorboard": False}}
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe), encoding="utf-8")
    assert main(["train", str(tmp_path / "recipe.yaml")]) == 2
    assert "missing.tsv" in one_line_error(capsys)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------------ inference verbs
def test_an_empty_test_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    assert main(["evaluate", "--model", str(MODELS / "translation"), "--data", str(tmp_path / "empty.tsv")]) == 2
    assert "empty.tsv: no test pairs" in one_line_error(capsys)


def test_a_length_penalty_that_is_not_a_number_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.txt").write_text("open\n", encoding="utf-8")
    argv = ["translate", "--model", str(MODELS / "translation"), "--input", str(tmp_path / "in.txt")]
    assert main([*argv, "--length-penalty", "nan"]) == 2
    assert "length_penalty must be a finite number, got nan" in one_line_error(capsys)


@pytest.mark.parametrize("verb, model", [("translate", "translation"), ("embed", "sentence-embedding")])
def test_output_naming_the_input_file_is_refused_and_the_input_kept(verb: str, model: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_text("open the file\nclose it\n", encoding="utf-8")
    assert main([verb, "--model", str(MODELS / model), "--input", str(source), "--output", str(source)]) == 2
    assert "is the --input file" in one_line_error(capsys)
    assert source.read_text(encoding="utf-8") == "open the file\nclose it\n"


def test_a_source_longer_than_the_model_reads_is_cut_and_counted(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A sinusoidal model saved without max_source_tokens reads at most SOURCE_LIMIT tokens of a
    source: the work of one line is bounded, and the command says how many lines were cut."""
    long_line = "open the file and close the window " * 2000  # ~70,000 characters, far more tokens than the limit
    (tmp_path / "in.txt").write_text(f"save it\n{long_line}\n", encoding="utf-8")
    assert main(["translate", "--model", str(MODELS / "translation"), "--beam", "1",
                 "--input", str(tmp_path / "in.txt")]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert captured.err == (f"transformerkit: warning: 1 of 2 inputs were longer than the model's limit of "
                            f"{SOURCE_LIMIT} tokens and were cut to it\n")
    translator = load_translator(MODELS / "translation")
    with pytest.warns(UserWarning, match="were cut"):
        (ids,) = translator.encode_sources([long_line])
    assert len(ids) == SOURCE_LIMIT + 1 and ids[-1] == translator.tokenizer.eos_id


def test_the_server_refuses_a_text_longer_than_the_model_reads() -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transformerkit.serve import create_app

    with TestClient(create_app(MODELS / "translation")) as client:
        reply = client.post("/v1/translate", json={"texts": ["save it", "open the file " * 2000]})
        assert reply.status_code == 413
        assert reply.json()["error"]["message"].startswith(f"texts.1: longer than the model's limit of {SOURCE_LIMIT}")
        assert client.post("/v1/translate", json={"texts": ["save it"]}).status_code == 200


# ----------------------------------------------------------------------------------- checkpoints
def ended_process_id() -> int:
    """The id of a process that has ended (ids are not reused at once)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                             check=True)
    return int(process.stdout)


def test_what_killed_writers_left_is_removed_at_the_next_save(tmp_path: Path) -> None:
    model, tokenizer, generation = load_model_dir(MODELS / "translation")
    checkpoints = tmp_path / "checkpoints"
    dead = ended_process_id()
    for leftover in (f".step-00000002.tmp-{dead}", f".step-00000001.old-{dead}"):
        (checkpoints / leftover).mkdir(parents=True)
        (checkpoints / leftover / "model.safetensors").write_bytes(b"partial")
    (checkpoints / f".latest.tmp-{dead}").symlink_to("step-00000001")
    alive = checkpoints / f".step-00000009.tmp-{os.getpid()}"  # a writer that still runs
    alive.mkdir()
    save_checkpoint(checkpoints / "step-00000003", model, tokenizer, generation, {"step": 3})
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(["step-00000003", "latest", alive.name])
    assert remove_stale_temporaries(checkpoints) == []


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")])
def test_a_full_disk_names_the_last_complete_checkpoint_and_loses_nothing(failure: Exception, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer, generation = load_model_dir(MODELS / "translation")
    checkpoints = tmp_path / "checkpoints"
    save_checkpoint(checkpoints / "step-00000002", model, tokenizer, generation, {"step": 2})

    def disk_full(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=f"^no space left writing checkpoint step-00000004 in {checkpoints}; "
                                              f"the last complete checkpoint is step-00000002$"):
        save_checkpoint(checkpoints / "step-00000004", model, tokenizer, generation, {"step": 4})
    monkeypatch.undo()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-00000002"]
    assert load_training_state(checkpoints / "latest") == {"step": 2}


# ------------------------------------------------------------------------------ serve deadlines
def slow_decoding(steps: list[int], interruptible_steps: bool = True):  # type: ignore[no-untyped-def]
    """A stand-in for Translator.translate whose decoding takes ~5 s in 10 ms steps, each step
    checking for a stop (as generate_tokens and beam_search do) unless told not to."""
    from transformerkit.generation.interrupt import check_interrupt

    def translate(self: object, texts: list[str]) -> list[str]:
        for _ in range(500):
            if interruptible_steps:
                check_interrupt()
            steps.append(1)
            time.sleep(0.01)
        return texts

    return translate


def test_a_request_past_its_deadline_gets_504_and_its_decoding_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transformerkit.inference.translation import Translator
    from transformerkit.serve import create_app

    steps: list[int] = []
    with TestClient(create_app(MODELS / "translation", request_timeout=0.3)) as client:
        monkeypatch.setattr(Translator, "translate", slow_decoding(steps))
        reply = client.post("/v1/translate", json={"texts": ["save it"]})
        assert reply.status_code == 504 and "--request-timeout" in reply.json()["error"]["message"]
        time.sleep(0.2)
        stopped_at = len(steps)
        assert stopped_at < 100  # 500 steps would take 5 s: decoding stopped soon after the deadline
        time.sleep(0.2)
        assert len(steps) == stopped_at
        monkeypatch.undo()
        assert client.post("/v1/translate", json={"texts": ["save it"]}).status_code == 200  # the model is free


def test_health_says_busy_while_work_runs_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transformerkit.inference.translation import Translator
    from transformerkit.serve import create_app

    steps: list[int] = []
    monkeypatch.setattr(Translator, "translate", slow_decoding(steps, interruptible_steps=False))
    with TestClient(create_app(MODELS / "translation", request_timeout=0.3)) as client:
        assert client.get("/health").json()["status"] == "ok"
        request = threading.Thread(target=client.post, args=("/v1/translate",), kwargs={"json": {"texts": ["a"]}})
        request.start()
        time.sleep(1.0)
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "busy", health.text
        request.join()  # answered 504; the work that ignores stops runs on, and the model stays busy
        deadline = time.monotonic() + 20
        while client.get("/health").status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(steps) == 500 and client.get("/health").json()["status"] == "ok"


def test_shutting_down_stops_decoding_under_way(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transformerkit.inference.translation import Translator
    from transformerkit.serve import create_app

    steps: list[int] = []
    monkeypatch.setattr(Translator, "translate", slow_decoding(steps))
    app = create_app(MODELS / "translation", request_timeout=0)
    replies = []
    with TestClient(app) as client:
        request = threading.Thread(target=lambda: replies.append(client.post("/v1/translate", json={"texts": ["a"]})))
        request.start()
        time.sleep(0.3)
        app.state.server.stopping = True  # what the lifespan's end sets on SIGTERM
        request.join(5)
        assert replies[0].status_code == 503 and len(steps) < 100
        app.state.server.stopping = False
    assert app.state.server.stopping  # the lifespan ended: set by the server itself


def test_an_interrupt_stops_only_its_own_threads_decoding() -> None:
    from transformerkit.generation.interrupt import DecodingInterrupted, interruptible

    translator = load_translator(MODELS / "translation", beam=2)
    expected = translator.translate(["open the file"])
    with interruptible(lambda: True):
        with pytest.raises(DecodingInterrupted):
            translator.translate(["open the file"])
        other: list[list[str]] = []
        worker = threading.Thread(target=lambda: other.append(translator.translate(["open the file"])))
        worker.start()
        worker.join()
    assert other == [expected] and translator.translate(["open the file"]) == expected


def test_generation_without_learned_positions_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rotary (or sinusoidal) language model has no position limit of its own: prompt + output
    stop at CONTEXT_LIMIT tokens, with a one-line warning; a prompt that fills it is one line."""
    from transformerkit.checkpoint import save_model_dir
    from transformerkit.config import preset
    from transformerkit.generation.config import GenerationConfig
    from transformerkit.inference.language_modeling import CONTEXT_LIMIT
    from transformerkit.models.decoder_only import DecoderOnlyTransformer

    tokenizer = SubwordTokenizer.load(MODELS / "language-modeling" / "tokenizer.json")
    model = DecoderOnlyTransformer(preset("gpt-tiny", num_decoder_layers=1, d_model=8, d_ff=16, num_heads=2,
                                          positional="rotary", vocab_size=tokenizer.vocab_size))
    save_model_dir(tmp_path / "lm", model, tokenizer, GenerationConfig(), task="language-modeling")
    prompt = "open the file " * 292  # 4,088 characters = tokens: room for 8 more
    assert main(["generate", "--model", str(tmp_path / "lm"), "--prompt", prompt, "--greedy",
                 "--max-new-tokens", "1000000000"]) == 0
    assert capsys.readouterr().err == (f"transformerkit: warning: generating {CONTEXT_LIMIT - len(prompt)} tokens, "
                                       f"not 1000000000: prompt + output must fit the limit of {CONTEXT_LIMIT} "
                                       f"tokens\n")
    assert main(["generate", "--model", str(tmp_path / "lm"), "--prompt", prompt * 2]) == 2
    assert f"leaves no room in the limit of {CONTEXT_LIMIT} tokens" in one_line_error(capsys)


@pytest.mark.parametrize("module, call, extra", [
    ("sklearn.metrics", lambda: __import__("transformerkit.inference.classification", fromlist=["x"])
     .classification_scores([0], [0]), "transformerkit[sklearn]"),
    ("sklearn.datasets", lambda: __import__("transformerkit.data.images", fromlist=["x"]).read_sklearn_digits(),
     "transformerkit[sklearn]"),
    ("rdata", lambda: __import__("transformerkit.data.cloze", fromlist=["x"]).read_r_lazyload(b"", b""),
     "transformerkit[austen]"),
])
def test_a_missing_extra_names_what_installs_it(module: str, call: object, extra: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-learn and rdata (with pandas, xarray, SciPy) are extras, needed by one score or corpus each."""
    from transformerkit.data.parallel import DataError

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(DataError, match=rf"needs {module.split('.')[0]}: pip install '{re.escape(extra)}'"):
        call()  # type: ignore[operator]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_replacing_a_model_directory_never_leaves_it_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new directory and the old one are exchanged in one step: no moment without ``model/``
    (it used to be renamed away first, then the new one renamed in)."""
    from transformerkit.checkpoint import atomic_directory

    final = tmp_path / "model"
    final.mkdir()
    (final / "weights").write_text("old", encoding="utf-8")
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(Path(a)), real_replace(a, b)))
    with atomic_directory(final) as tmp:
        (tmp / "weights").write_text("new", encoding="utf-8")
    assert (final / "weights").read_text(encoding="utf-8") == "new"
    assert final not in moved and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


class Payload:
    """A pickle that runs a shell command if anything but a weights-only loader unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_training_state_runs_nothing_and_is_one_line(tmp_path: Path) -> None:
    """It used to be refused with an `UnpicklingError … GLOBAL posix.system` traceback."""
    import pickle

    marker = tmp_path / "ran"
    for name, data in (("plain pickle", pickle.dumps(Payload(marker))),
                       ("torch.save", None)):
        path = tmp_path / name
        path.mkdir()
        if data is None:
            torch.save({"step": 1, "payload": Payload(marker)}, path / "training_state.pt")
        else:
            (path / "training_state.pt").write_bytes(data)
        with pytest.raises(CheckpointError, match="training_state.pt: damaged or not a training state"):
            load_training_state(path)
        assert not marker.exists(), name
