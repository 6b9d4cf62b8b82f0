"""Client data for federated learning: label-skew (Dirichlet) and domain (style-shift) splits.

* :func:`dirichlet_indices` / :func:`label_skew_clients` -- the usual non-IID label split (Hsu et al.,
  2019): for every class ``c`` the proportions ``p_c ~ Dir(alpha * 1_K)`` over the ``K`` clients decide
  how that class's examples are dealt out. Small ``alpha`` gives clients few classes, large ``alpha``
  approaches an IID split. Seeded; draws are repeated (at most ``max_tries``) until every client holds at
  least ``min_per_client`` examples, as in NIID-Bench.
* :func:`domain_clients` -- one client per domain: the base images are dealt into disjoint, class-
  stratified parts (seeded) and each part is given one style of :func:`fmbook.core.datasets.style_shift`
  (``original`` = unchanged); ``digits`` is scikit-learn's digits padded to 28x28 (its own 10 classes).
* every client is split into train/val/test (default 60/20/20, class-stratified, seeded):
  :class:`ClientData`.
* :func:`holdings_table` says who holds what (one row per client, split and class);
  :func:`plot_holdings` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fmbook.core.datasets import STYLE_SHIFTS, ImageSet, load_digits_28, style_shift

DOMAINS: tuple[str, ...] = ("original",) + tuple(STYLE_SHIFTS) + ("digits",)
SPLIT_NAMES = ("train", "val", "test")


class FLDataError(ValueError):
    """A federated split was asked for with impossible parameters (the message says which)."""


@dataclass(frozen=True)
class ClientData:
    """One client's data: ``train``, ``val``, ``test`` (disjoint), and what the client is called."""

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    def split(self, which: str) -> ImageSet:
        if which not in SPLIT_NAMES:
            raise FLDataError(f"split must be one of {SPLIT_NAMES}, got {which!r}")
        return getattr(self, which)

    def __len__(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)


# --------------------------------------------------------------------------- Dirichlet label skew

def dirichlet_indices(labels: Sequence[int] | np.ndarray, num_clients: int, alpha: float, seed: int,
                      min_per_client: int = 1, max_tries: int = 1000) -> list[np.ndarray]:
    """Deal the indices of ``labels`` to ``num_clients`` clients with Dirichlet(``alpha``) label skew.

    For every class the shares over clients are drawn from ``Dir(alpha * 1)`` and the class's indices
    (shuffled) are cut at the cumulative shares. Every index goes to exactly one client. The draw is
    repeated until each client has at least ``min_per_client`` indices. Returns sorted index arrays.
    """
    labels = np.asarray(labels)
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise FLDataError(f"alpha (Dirichlet concentration) must be a number > 0, got {alpha!r}")
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise FLDataError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    if labels.ndim != 1 or len(labels) == 0:
        raise FLDataError("labels must be a non-empty 1-d array")
    classes, counts = np.unique(labels, return_counts=True)
    if num_clients * min_per_client > len(labels):
        raise FLDataError(f"{num_clients} clients with at least {min_per_client} example(s) each need "
                          f"{num_clients * min_per_client} examples; there are only {len(labels)}")
    if num_clients > counts.max():
        raise FLDataError(f"more clients ({num_clients}) than the largest class has examples "
                          f"({int(counts.max())}, class {classes[counts.argmax()]!r}): no split can give "
                          "every client data of some class; use fewer clients")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for k, chunk in enumerate(np.split(members, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_per_client:
            return out
    raise FLDataError(f"after {max_tries} draws some client still had fewer than {min_per_client} examples "
                      f"(alpha={alpha}, {num_clients} clients, {len(labels)} examples): raise alpha, lower "
                      "min_per_client or use fewer clients")


def _stratified_three_way(labels: np.ndarray, fractions: tuple[float, float, float],
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        n_train = n - n_val - n_test
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train:n_train + n_val])
        parts[2].append(members[n_train + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)  # type: ignore[return-value]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-9 or fr[0] <= 0:
        raise FLDataError(f"fractions must be three non-negative numbers (train, val, test) summing to 1 "
                          f"with train > 0, got {fractions}")
    return fr  # type: ignore[return-value]


def split_client(name: str, data: ImageSet, seed: int,
                 fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> ClientData:
    """Split one client's images into train/val/test, class by class (seeded)."""
    fr = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    train, val, test = _stratified_three_way(data.labels, fr, rng)
    return ClientData(name, data.take(train, "train"), data.take(val, "val"), data.take(test, "test"))


def label_skew_clients(data: ImageSet, num_clients: int, alpha: float, seed: int,
                       fractions: Sequence[float] = (0.6, 0.2, 0.2), min_per_client: int = 10) -> list[ClientData]:
    """``num_clients`` clients with Dirichlet(``alpha``) label skew over ``data``, each split 60/20/20."""
    parts = dirichlet_indices(data.labels, num_clients, alpha, seed, min_per_client=min_per_client)
    return [split_client(f"client {k}", data.take(idx, f"dirichlet(alpha={alpha},seed={seed})#{k}"), seed + 1 + k,
                         fractions) for k, idx in enumerate(parts)]


# --------------------------------------------------------------------------- domains

def _disjoint_parts(labels: np.ndarray, parts: int, per_part: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Deal every class's indices round-robin into ``parts`` disjoint parts (optionally capped per part)."""
    out: list[list[np.ndarray]] = [[] for _ in range(parts)]
    classes = np.unique(labels)
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        for k in range(parts):
            chunk = members[k::parts]
            if per_part is not None:
                chunk = chunk[: int(np.ceil(per_part / len(classes)))]
            out[k].append(chunk)
    return [np.sort(np.concatenate(p)) for p in out]


def make_domain(data: ImageSet, domain: str) -> ImageSet:
    """``data`` in the style ``domain`` (``original`` unchanged; any kind of :data:`STYLE_SHIFTS`)."""
    if domain == "original":
        return ImageSet(f"{data.name}|shift=original", data.images, data.labels, data.classes)
    if domain == "digits":
        raise FLDataError("'digits' is a data set of its own, not a style of other images; "
                          "domain_clients builds it")
    if domain not in STYLE_SHIFTS:
        raise FLDataError(f"unknown domain {domain!r}; allowed: {', '.join(DOMAINS)}")
    return style_shift(data, domain)


def domain_clients(base: ImageSet, domains: Sequence[str], seed: int, per_domain: int | None = None,
                   fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> list[ClientData]:
    """One client per domain, named after it.

    The images of ``base`` are dealt class by class into disjoint parts, one per non-``digits`` domain
    (at most ``per_domain`` images each, balanced over classes), so that no image appears in two domains;
    part ``k`` gets style ``domains[k]``. ``digits`` (if listed) is all of scikit-learn's digits
    (28x28; or ``per_domain`` of them), with its own classes. Every client is split ``fractions``.
    """
    domains = list(domains)
    bad = [d for d in domains if d not in DOMAINS]
    if bad:
        raise FLDataError(f"unknown domain(s) {bad}; allowed: {', '.join(DOMAINS)}")
    if len(set(domains)) != len(domains) or not domains:
        raise FLDataError(f"domains must be a non-empty list of distinct names, got {domains}")
    if per_domain is not None and per_domain < 1:
        raise FLDataError(f"per_domain must be >= 1 or None, got {per_domain}")
    _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    styled = [d for d in domains if d != "digits"]
    parts = _disjoint_parts(base.labels, len(styled), per_domain, rng) if styled else []
    index = dict(zip(styled, parts))
    clients = []
    for k, domain in enumerate(domains):
        if domain == "digits":
            data = load_digits_28()
            if per_domain is not None and per_domain < len(data):
                data = data.take(_disjoint_parts(data.labels, 1, per_domain, rng)[0], f"n={per_domain}")
        else:
            data = make_domain(base.take(index[domain], f"domain-part={domain},seed={seed}"), domain)
        clients.append(split_client(domain, data, seed * 1000 + k + 1, fractions))
    return clients


# --------------------------------------------------------------------------- who holds what

def holdings_table(clients: Sequence[ClientData]):
    """Long table: one row per client, split and class, with ``count`` (a pandas DataFrame)."""
    import pandas as pd

    rows = []
    for k, client in enumerate(clients):
        for split in SPLIT_NAMES:
            data = client.split(split)
            counts = np.bincount(data.labels, minlength=data.num_classes)
            for c, name in enumerate(data.classes):
                rows.append({"client_id": k, "client": client.name, "split": split, "class": name,
                             "count": int(counts[c])})
    return pd.DataFrame(rows)


def plot_holdings(table, split: str = "train", ax=None, title: str | None = None):
    """Stacked bars: images per class (colour) held by each client in ``split``. Returns the figure."""
    import matplotlib.pyplot as plt

    sub = table[table["split"] == split]
    pivot = sub.pivot_table(index="client", columns="class", values="count", aggfunc="sum", sort=False,
                            fill_value=0)
    order = list(dict.fromkeys(sub["client"]))
    pivot = pivot.loc[order, list(dict.fromkeys(sub["class"]))]
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(10, 2 + 0.8 * len(order)), 4))
    else:
        fig = ax.figure
    bottom = np.zeros(len(pivot))
    cmap = plt.get_cmap("tab20")
    for j, cls in enumerate(pivot.columns):
        ax.bar(range(len(pivot)), pivot[cls].to_numpy(), bottom=bottom, label=str(cls), color=cmap(j % 20))
        bottom += pivot[cls].to_numpy()
    ax.set_xticks(range(len(pivot)), pivot.index, rotation=30 if len(pivot) > 6 else 0)
    ax.set_xlabel("client")
    ax.set_ylabel(f"{split} images")
    ax.set_title(title or f"Who holds what ({split} split)")
    ax.legend(title="class", fontsize=9, ncol=1 if pivot.shape[1] <= 10 else 2, bbox_to_anchor=(1.01, 1),
              loc="upper left")
    fig.tight_layout()
    return fig
