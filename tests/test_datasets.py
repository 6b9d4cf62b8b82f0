"""fmbook.core.datasets: shapes, checksums, determinism of the splits and the style shifts."""

from __future__ import annotations

import numpy as np
import pytest

from fmbook.core import datasets as ds


@pytest.fixture(scope="module")
def fmnist_test():
    return ds.load_fashion_mnist("test")


def test_fashion_mnist_shapes_and_checksums(fmnist_test):
    train = ds.load_fashion_mnist("train")
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert fmnist_test.images.shape == (10000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(fmnist_test.labels).tolist() == [1000] * 10
    assert len(ds.FASHION_MNIST_CLASSES) == 10 and fmnist_test.classes[9] == "Ankle boot"
    # content identity of the decoded arrays (pixels and labels)
    assert train.fingerprint == "49ba6927a1b4ab67"
    assert fmnist_test.fingerprint == "cd968d8e7a9fa555"
    # decoding again (from the .npz cache) gives the same bytes
    assert ds.load_fashion_mnist("test").fingerprint == fmnist_test.fingerprint


def test_fashion_mnist_bad_split():
    with pytest.raises(ValueError, match="split must be one of"):
        ds.load_fashion_mnist("validation")


def test_digits_28():
    digits = ds.load_digits_28()
    assert digits.images.shape == (1797, 28, 28) and digits.num_classes == 10
    assert digits.images[:, :4].max() == 0 and digits.images[:, -4:].max() == 0  # MNIST-like frame
    assert digits.images.max() == 255
    assert digits.fingerprint == ds.load_digits_28().fingerprint == "097077b2eb5d05d9"


def test_unknown_dataset_names_allowed_values():
    with pytest.raises(ValueError, match="fashion-mnist, digits"):
        ds.load_image_dataset("mnist")


def test_hub_dataset_needs_datasets_package():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="datasets"):
            ds.load_image_dataset("uoft-cs/cifar10", "train")
    else:
        pytest.skip("the 'datasets' package is installed; the hub path would go online")


def test_select_classes_relabels(fmnist_test):
    picked = ds.select_classes(fmnist_test, (7, 3))
    assert picked.classes == ("Sneaker", "Dress")
    assert len(picked) == 2000 and set(np.unique(picked.labels)) == {0, 1}
    sneakers = fmnist_test.images[fmnist_test.labels == 7]
    np.testing.assert_array_equal(picked.images[picked.labels == 0], sneakers)
    with pytest.raises(ValueError, match="classes must be distinct"):
        ds.select_classes(fmnist_test, (3, 3))


def test_stratified_subsample_and_split(fmnist_test):
    a = ds.stratified_subsample(fmnist_test, 7, seed=1)
    b = ds.stratified_subsample(fmnist_test, 7, seed=1)
    c = ds.stratified_subsample(fmnist_test, 7, seed=2)
    assert np.bincount(a.labels).tolist() == [7] * 10
    assert a.fingerprint == b.fingerprint != c.fingerprint
    train, test = ds.stratified_split(fmnist_test, 0.5, seed=0)
    assert len(train) == len(test) == 5000
    assert np.bincount(test.labels).tolist() == [500] * 10
    # disjoint: no image row appears in both halves
    rows = {r.tobytes() for r in train.images.reshape(len(train), -1)}
    assert not any(r.tobytes() in rows for r in test.images.reshape(len(test), -1)[:500])
    with pytest.raises(ValueError, match="per_class"):
        ds.stratified_subsample(fmnist_test, 0, seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        ds.stratified_split(fmnist_test, 1.5, seed=0)


@pytest.mark.parametrize("kind", list(ds.STYLE_SHIFTS))
def test_style_shifts_deterministic_and_different(fmnist_test, kind):
    small = fmnist_test.take(np.arange(50), "first50")
    shifted = ds.style_shift(small, kind)
    assert shifted.images.shape == small.images.shape and shifted.images.dtype == np.uint8
    np.testing.assert_array_equal(shifted.labels, small.labels)
    assert ds.style_shift(small, kind).fingerprint == shifted.fingerprint
    assert not np.array_equal(shifted.images, small.images)
    assert kind in shifted.name


def test_style_shift_properties(fmnist_test):
    small = fmnist_test.take(np.arange(20), "first20")
    inverted = ds.style_shift(small, "invert")
    np.testing.assert_array_equal(inverted.images.astype(int), 255 - small.images.astype(int))
    blurred = ds.style_shift(small, "blur").images.astype(float)
    # blurring spreads mass but keeps its total (up to what leaks past the zero border, and rounding)
    assert abs(blurred.sum() - small.images.astype(float).sum()) / small.images.sum() < 0.05
    assert blurred.std() < small.images.std()
    sketch = ds.style_shift(small, "sketch").images
    assert sketch.reshape(20, -1).max(axis=1).tolist() == [255] * 20
    with pytest.raises(ValueError, match="invert, sketch, blur, rotate"):
        ds.style_shift(small, "fog")
