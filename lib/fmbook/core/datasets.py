"""Image datasets and splits: Fashion-MNIST, scikit-learn digits, style shifts, seeded subsets.

Everything here is deterministic: the same call returns the same bytes on every machine, and every
:class:`ImageSet` carries a ``fingerprint`` (SHA-256 of its pixels and labels) that caches key on.

Sources
-------
``fashion-mnist``
    The offline asset of the same name (:func:`fmbook.core.assets.require`): Zalando's idx files, decoded
    once into ``cache_dir()/datasets/fashion-mnist-<sha>.npz``.
``digits``
    scikit-learn's 1,797 handwritten digits (8x8, values 0..16), upsampled to 28x28 the MNIST way
    (see :func:`load_digits_28`).
a hub id (``owner/name``, e.g. ``uoft-cs/cifar10``)
    The ``full`` profile's CIFAR-style sets through the ``datasets`` library. Not runnable on the
    offline build machines (no hub access, and ``datasets`` is not in the book's environment).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmbook.core import assets
from fmbook.core.paths import cache_dir

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

LOCAL_DATASETS = ("fashion-mnist", "digits")
SPLITS = ("train", "test")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ImageSet:
    """Images (``uint8``, ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB) with integer labels.

    ``name`` says where the images came from and what was done to them
    (``"fashion-mnist/test|classes=3,4,6,7|shift=invert"``); ``fingerprint`` identifies the content.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8:
            raise TypeError(f"ImageSet.images must be uint8, got {self.images.dtype}")
        if self.images.ndim not in (3, 4) or (self.images.ndim == 4 and self.images.shape[-1] != 3):
            raise ValueError(f"ImageSet.images must be (N, H, W) or (N, H, W, 3), got {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"ImageSet.labels must have shape ({len(self.images)},), got {self.labels.shape}")
        labels = self.labels.astype(np.int64, copy=False)
        object.__setattr__(self, "labels", labels)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in 0..{len(self.classes) - 1} for {len(self.classes)} classes")
        object.__setattr__(self, "fingerprint", fingerprint_arrays(self.images, labels))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, index: np.ndarray, suffix: str) -> "ImageSet":
        """A subset by index array, with ``suffix`` appended to the name."""
        return ImageSet(f"{self.name}|{suffix}", self.images[index], self.labels[index], self.classes)


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """Short SHA-256 over the shapes, dtypes and bytes of the arrays (a content identity)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- Fashion-MNIST

def _read_idx(path: Path) -> np.ndarray:
    """Decode one gzipped idx file (the MNIST format: magic, dims, big-endian sizes, uint8 data)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path.name}: not an unsigned-byte idx file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path.name}: {array.size} bytes of data, expected {int(np.prod(dims))}")
    return array.reshape(dims)


def load_fashion_mnist(split: str = "train") -> ImageSet:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) images, 28x28 grey, 10 classes.

    Decoded once into the cache as ``.npz``; kept in memory for the process (treat as read-only).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _load_fashion_mnist(split)


@functools.lru_cache(maxsize=2)
def _load_fashion_mnist(split: str) -> ImageSet:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = assets.require("fashion-mnist")
    checksums = assets.get("fashion-mnist").sha256
    tag = hashlib.sha256("".join(sorted(checksums.values())).encode()).hexdigest()[:12]
    cached = cache_dir() / "datasets" / f"fashion-mnist-{tag}.npz"
    if not cached.is_file():
        arrays = {
            "train_images": _read_idx(folder / "train-images-idx3-ubyte.gz"),
            "train_labels": _read_idx(folder / "train-labels-idx1-ubyte.gz"),
            "test_images": _read_idx(folder / "t10k-images-idx3-ubyte.gz"),
            "test_labels": _read_idx(folder / "t10k-labels-idx1-ubyte.gz"),
        }
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{np.random.SeedSequence().entropy % 10**8}.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cached)
    with np.load(cached) as data:
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    return ImageSet(f"fashion-mnist/{split}", images, labels, FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------- digits

@functools.lru_cache(maxsize=1)
def load_digits_28() -> ImageSet:
    """scikit-learn's 1,797 digits as 28x28 uint8 images, centred like MNIST.

    Each 8x8 image (values 0..16) is scaled to 0..255, resized to 20x20 with bilinear interpolation
    (``torch.nn.functional.interpolate``, ``align_corners=False``) and padded by 4 pixels on each
    side, as MNIST puts a 20x20 digit in a 28x28 frame.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    big = F.pad(big, (4, 4, 4, 4))[:, 0]
    images = big.round().clamp(0, 255).to(torch.uint8).numpy()
    return ImageSet("digits", images, bunch.target.astype(np.int64), DIGIT_CLASSES)


# --------------------------------------------------------------------------- hub (full profile)

def load_hub_image_dataset(hub_id: str, split: str = "train") -> ImageSet:
    """A Hugging Face image classification dataset (``full`` profile; needs the hub and ``datasets``).

    Not runnable on the offline build machines. The first image column and the first label column of
    the split are used; images become RGB ``uint8`` arrays (all images must share one size, as in
    CIFAR-10/100).
    """
    try:
        import datasets as hf_datasets  # type: ignore[import-not-found]
    except ImportError as err:
        raise ImportError(f"dataset {hub_id!r} is a hub id: it needs the 'datasets' package "
                          "(pip install -r requirements-full.txt) and access to the Hugging Face hub") from err
    data = hf_datasets.load_dataset(hub_id, split=split)
    image_col = next(n for n, f in data.features.items() if type(f).__name__ == "Image")
    label_col = next(n for n, f in data.features.items() if type(f).__name__ == "ClassLabel")
    images = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img in data[image_col]])
    labels = np.asarray(data[label_col], dtype=np.int64)
    classes = tuple(data.features[label_col].names)
    return ImageSet(f"{hub_id}/{split}", images, labels, classes)


def load_image_dataset(name: str, split: str = "train") -> ImageSet:
    """``fashion-mnist`` (train/test), ``digits`` (all 1,797; split with :func:`stratified_split`),
    or a hub id ``owner/name`` (``full`` profile only)."""
    if name == "fashion-mnist":
        return load_fashion_mnist(split)
    if name == "digits":
        return load_digits_28()
    if _HUB_ID.match(name):
        return load_hub_image_dataset(name, split)
    raise ValueError(f"unknown image dataset {name!r}; allowed: {', '.join(LOCAL_DATASETS)} "
                     "or a Hugging Face hub id 'owner/name' (full profile)")


# --------------------------------------------------------------------------- subsets and splits

def select_classes(data: ImageSet, classes: tuple[int, ...] | list[int]) -> ImageSet:
    """Keep only the given classes and relabel them ``0..len(classes)-1`` in the given order."""
    classes = tuple(int(c) for c in classes)
    bad = [c for c in classes if not 0 <= c < data.num_classes]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be distinct integers in 0..{data.num_classes - 1}, got {classes}")
    keep = np.isin(data.labels, classes)
    relabel = np.full(data.num_classes, -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return ImageSet(f"{data.name}|classes={','.join(map(str, classes))}", data.images[keep],
                    relabel[data.labels[keep]], tuple(data.classes[c] for c in classes))


def stratified_subsample(data: ImageSet, per_class: int, seed: int) -> ImageSet:
    """``per_class`` images of every class, drawn without replacement with ``seed`` (kept in order)."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    picked = []
    for label in range(data.num_classes):
        members = np.flatnonzero(data.labels == label)
        if len(members) < per_class:
            raise ValueError(f"per_class={per_class} but class {label} of {data.name} has only {len(members)} images")
        picked.append(rng.choice(members, size=per_class, replace=False))
    index = np.sort(np.concatenate(picked))
    return data.take(index, f"per_class={per_class},seed={seed}")


def stratified_split(data: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split every class into train/test with ``test_fraction`` of it in test (seeded)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for label in range(data.num_classes):
        members = np.flatnonzero(data.labels == label)
        test.append(rng.choice(members, size=int(round(test_fraction * len(members))), replace=False))
    test_index = np.sort(np.concatenate(test))
    train_index = np.setdiff1d(np.arange(len(data)), test_index)
    tag = f"split={test_fraction},seed={seed}"
    return data.take(train_index, f"{tag},train"), data.take(test_index, f"{tag},test")


# --------------------------------------------------------------------------- style shifts (OOD)

def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(round(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _filter_separable(images: np.ndarray, kernel_rows: np.ndarray, kernel_cols: np.ndarray) -> np.ndarray:
    """Correlate every image (axes 1 and 2) with a separable kernel, zero padding."""
    from scipy.ndimage import correlate1d

    out = correlate1d(images, kernel_rows, axis=1, mode="constant")
    return correlate1d(out, kernel_cols, axis=2, mode="constant")


def _invert(x: np.ndarray) -> np.ndarray:
    return 255.0 - x


def _sketch(x: np.ndarray) -> np.ndarray:
    smooth, diff = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    gy = _filter_separable(x, diff, smooth)
    gx = _filter_separable(x, smooth, diff)
    magnitude = np.hypot(gx, gy)
    peak = magnitude.reshape(len(x), -1).max(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    return 255.0 * magnitude / np.maximum(peak, 1e-9)


def _blur(x: np.ndarray) -> np.ndarray:
    kernel = _gaussian_kernel(1.5)
    return _filter_separable(x, kernel, kernel)


def _rotate(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import rotate

    return rotate(x, angle=30.0, axes=(2, 1), reshape=False, order=1, mode="constant", cval=0.0)


STYLE_SHIFTS: dict[str, str] = {
    "invert": "photographic negative: 255 - x (dark garment on a bright background)",
    "sketch": "edge map: Sobel gradient magnitude, scaled so each image's strongest edge is 255",
    "blur": "Gaussian blur, sigma = 1.5 pixels (kernel radius 5, zero padding)",
    "rotate": "rotation by 30 degrees counter-clockwise about the centre, bilinear, black fill",
}
_SHIFT_FUNCTIONS = {"invert": _invert, "sketch": _sketch, "blur": _blur, "rotate": _rotate}


def style_shift(data: ImageSet, kind: str) -> ImageSet:
    """A deterministic style shift of every image (labels unchanged); kinds in :data:`STYLE_SHIFTS`."""
    if kind not in _SHIFT_FUNCTIONS:
        raise ValueError(f"unknown style shift {kind!r}; allowed: {', '.join(STYLE_SHIFTS)}")
    shifted = _SHIFT_FUNCTIONS[kind](data.images.astype(np.float64))
    images = np.clip(np.round(shifted), 0, 255).astype(np.uint8)
    return ImageSet(f"{data.name}|shift={kind}", images, data.labels, data.classes)
