"""Long-tailed training sets and the many / medium / few split (paper, Section 4.1).

* :func:`exponential_counts`: the exponential profile of CIFAR-LT (Cao et al., 2019):
  ``n_r = floor(n_max * rho ** (-r / (C - 1)))`` for the class of rank ``r``, so the largest class has
  ``n_max`` images and the smallest ``n_max / rho``; ``rho`` is the *imbalance ratio*.
* :func:`long_tailed_splits`: one seeded class order (which class is the head) and seeded image draws
  with imbalanced-learn's ``make_imbalance``; the sets for increasing ratios are *nested* (the set at
  ratio 100 is a subset of the set at ratio 50, itself a subset of the one at ratio 10), so their
  token maps are extracted once.
* :class:`ShotThresholds`: the paper's split by *training* count (many > 100, medium 20-100,
  few < 20 images on ImageNet-LT, whose largest class has 1,280), scaled by ``n_max / 1280``.
* :func:`fashion_mnist_pool`: Fashion-MNIST training images that the offline vision-language model
  never saw (its contrastive training used a stratified subset), so the long-tailed sets are new data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fmbook.core.datasets import ImageSet


class ImbalanceError(ValueError):
    """A bad argument of the imbalance chapter (the message names it and the allowed values)."""


PAPER_MANY_ABOVE = 100  # many-shot: more than 100 training images (ImageNet-LT protocol)
PAPER_FEW_BELOW = 20  # few-shot: fewer than 20 training images
PAPER_MAX_PER_CLASS = 1280  # the largest class of ImageNet-LT
GROUPS = ("many", "medium", "few")


def check_ratio(ratio: float) -> float:
    """An imbalance ratio ``rho = n_max / n_min`` must be a number >= 1."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ImbalanceError(f"imbalance ratio must be a number >= 1, got {ratio!r}") from None
    if not np.isfinite(value) or value < 1:
        raise ImbalanceError(f"imbalance ratio must be a number >= 1 (1 = balanced), got {ratio!r}")
    return value


def exponential_counts(n_max: int, ratio: float, num_classes: int) -> np.ndarray:
    """Images per class *rank* (rank 0 = head): ``floor(n_max * ratio ** (-r / (C - 1)))``, at least 1."""
    ratio = check_ratio(ratio)
    if int(n_max) < 1:
        raise ImbalanceError(f"n_max must be >= 1, got {n_max}")
    if int(num_classes) < 2:
        raise ImbalanceError(f"num_classes must be >= 2, got {num_classes}")
    ranks = np.arange(num_classes)
    counts = np.floor(n_max * ratio ** (-ranks / (num_classes - 1)) + 1e-9).astype(np.int64)
    return np.maximum(counts, 1)


@dataclass(frozen=True)
class ShotThresholds:
    """many: ``count > many_above``; few: ``count < few_below``; medium: the rest (both ends included)."""

    many_above: float = PAPER_MANY_ABOVE
    few_below: float = PAPER_FEW_BELOW

    def __post_init__(self) -> None:
        if not 0 <= self.few_below <= self.many_above:
            raise ImbalanceError(f"need 0 <= few_below <= many_above, got {self.few_below}, {self.many_above}")

    @classmethod
    def scaled(cls, n_max: int) -> "ShotThresholds":
        """The paper's thresholds scaled to our largest class: ``100 * n_max / 1280`` and ``20 * n_max / 1280``."""
        scale = n_max / PAPER_MAX_PER_CLASS
        return cls(PAPER_MANY_ABOVE * scale, PAPER_FEW_BELOW * scale)

    def groups(self, counts: Sequence[int]) -> np.ndarray:
        """``"many"``, ``"medium"`` or ``"few"`` for every class, from its training count."""
        counts = np.asarray(counts)
        return np.where(counts > self.many_above, "many", np.where(counts < self.few_below, "few", "medium"))


@dataclass(frozen=True)
class LongTailSplit:
    """One long-tailed training set: indices into the pool, per-class counts, shot groups."""

    name: str
    ratio: float
    seed: int
    indices: np.ndarray  # sorted indices into the pool
    labels: np.ndarray  # labels of those images
    counts: np.ndarray  # (C,) training images per class (class order, not rank order)
    class_rank: np.ndarray  # (C,) rank of each class in the profile (0 = head)
    groups: np.ndarray  # (C,) "many" / "medium" / "few"

    def __len__(self) -> int:
        return len(self.indices)


def long_tailed_splits(pool_labels: np.ndarray, num_classes: int, ratios: Sequence[float], n_max: int,
                       seed: int, thresholds: ShotThresholds | None = None,
                       name: str = "pool") -> dict[float, LongTailSplit]:
    """Nested long-tailed sets at every ratio, drawn from ``pool_labels`` with ``seed``.

    The class order (which class gets ``n_max`` images, which the fewest) is a seeded permutation.
    The mildest ratio is drawn from the pool with ``imblearn.datasets.make_imbalance``; each steeper
    ratio is drawn the same way from the previous set, so the sets are nested.
    """
    from imblearn.datasets import make_imbalance

    labels = np.asarray(pool_labels, dtype=np.int64)
    if not ratios:
        raise ImbalanceError("ratios is empty; give at least one imbalance ratio >= 1")
    checked = sorted({check_ratio(r) for r in ratios})
    thresholds = thresholds or ShotThresholds.scaled(n_max)
    rng = np.random.default_rng(seed)
    rank = np.empty(num_classes, dtype=np.int64)
    rank[rng.permutation(num_classes)] = np.arange(num_classes)
    available = np.bincount(labels, minlength=num_classes)
    if available.min() < n_max:
        raise ImbalanceError(f"n_max={n_max} but the pool has only {int(available.min())} images in its "
                             "smallest class; lower n_max")
    current = np.arange(len(labels))
    out: dict[float, LongTailSplit] = {}
    for ratio in checked:
        counts = exponential_counts(n_max, ratio, num_classes)[rank]
        strategy = {c: int(counts[c]) for c in range(num_classes)}
        picked, _ = make_imbalance(current.reshape(-1, 1), labels[current], sampling_strategy=strategy,
                                   random_state=seed)
        current = np.sort(picked.ravel())
        out[ratio] = LongTailSplit(f"{name}|LT rho={ratio:g},n_max={n_max},seed={seed}", ratio, seed, current,
                                   labels[current], counts, rank, thresholds.groups(counts))
    return out


def fashion_mnist_pool(lit_config=None) -> ImageSet:
    """Fashion-MNIST training images without those the offline VLM trained on (``lit_config``'s subset,
    matched by content); ``lit_config=None`` keeps all 60,000."""
    from fmbook.core import vlm
    from fmbook.core.datasets import load_fashion_mnist

    full = load_fashion_mnist("train")
    if lit_config is None:
        return full
    seen, _ = vlm.fashion_mnist_splits(lit_config)
    row = np.dtype((np.void, full.images[0].nbytes))
    seen_rows = set(np.ascontiguousarray(seen.images).reshape(len(seen), -1).view(row).ravel().tolist())
    rows = np.ascontiguousarray(full.images).reshape(len(full), -1).view(row).ravel()
    keep = np.flatnonzero([r not in seen_rows for r in rows.tolist()])
    return full.take(keep, "unseen-by-lit")


def balanced_test_set(data: ImageSet, per_class: int, seed: int = 0) -> ImageSet:
    """A balanced evaluation set of ``per_class`` images per class (all of them if fewer)."""
    from fmbook.core.datasets import stratified_subsample

    smallest = int(np.bincount(data.labels, minlength=data.num_classes).min())
    if per_class >= smallest:
        keep = np.concatenate([np.flatnonzero(data.labels == c)[:smallest] for c in range(data.num_classes)])
        return data if smallest * data.num_classes == len(data) else data.take(np.sort(keep), f"per_class={smallest}")
    return stratified_subsample(data, per_class, seed)
