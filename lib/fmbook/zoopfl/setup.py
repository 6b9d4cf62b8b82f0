"""The chapter's clients and black boxes, built from plain (JSON-able) settings.

* :class:`ClientsConfig` -> :func:`build_clients`: Fashion-MNIST test images (never seen by the black
  box, which is trained on the training split) dealt into disjoint class-stratified parts, one per
  *domain* (the style shifts of :mod:`fmbook.core.datasets`: ``original``, ``invert``, ``blur``,
  ``rotate``, ``sketch``); each domain's part is split over ``clients_per_domain`` clients with
  Dirichlet(``alpha``) label skew (one client per domain: no label skew); every client is split
  train/val/test. So clients differ by style *and* by class proportions (Figure 1(b) of the paper
  shows label skew; the domains are ours).
* :class:`BlackBoxConfig` -> :func:`build_blackbox`: ``tiny-resnet`` (the book's image encoder with a
  linear head, pre-trained here on clean Fashion-MNIST, cached), ``fmbook/lit-fashion-minilm`` (the
  book's vision-language model as a zero-shot classifier over the ten class names), or, for ``full``,
  a hub id: ``kind="zero-shot"`` for a CLIP, ``kind="classifier"`` for a ViT-style image classifier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from fmbook.core import datasets as _datasets
from fmbook.zoopfl.blackbox import BlackBox, ZooPFLError

BLACKBOX_KINDS = ("classifier", "zero-shot")
OFFLINE_BLACKBOXES = ("tiny-resnet", "fmbook/lit-fashion-minilm")


@dataclass(frozen=True)
class ClientsConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist (test split) or a hub id (full)
    domains: tuple[str, ...] = ("original", "invert", "blur", "rotate")
    clients_per_domain: int = 2
    alpha: float = 0.5  # Dirichlet concentration of the label skew inside a domain
    per_domain: int = 600  # images per domain (before the client split)
    fractions: tuple[float, float, float] = (0.5, 0.1, 0.4)  # train / val / test of every client
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "fractions", tuple(self.fractions))
        if not self.domains or self.clients_per_domain < 1 or self.per_domain < 10:
            raise ZooPFLError(f"need at least one domain, clients_per_domain >= 1 and per_domain >= 10; got "
                              f"{self.domains}, {self.clients_per_domain}, {self.per_domain}")

    @property
    def num_clients(self) -> int:
        return len(self.domains) * self.clients_per_domain

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["domains"], out["fractions"] = list(self.domains), list(self.fractions)
        return out


def build_clients(config: ClientsConfig):
    """``list[fmbook.core.fl.ClientData]`` named ``"<domain> <k>"`` (see the module docstring)."""
    from fmbook.core.fl import data as fl_data

    base = _datasets.load_image_dataset(config.dataset, "test")
    rng = np.random.default_rng(config.seed)
    parts: list[list[np.ndarray]] = [[] for _ in config.domains]
    for c in range(base.num_classes):  # disjoint, class-stratified parts, one per domain
        members = rng.permutation(np.flatnonzero(base.labels == c))
        per_class = int(np.ceil(config.per_domain / base.num_classes))
        for k in range(len(config.domains)):
            parts[k].append(members[k::len(config.domains)][:per_class])
    clients = []
    for k, domain in enumerate(config.domains):
        index = np.sort(np.concatenate(parts[k]))
        data = fl_data.make_domain(base.take(index, f"zoopfl-domain={domain},seed={config.seed}"), domain)
        if config.clients_per_domain == 1:
            split = [fl_data.split_client(domain, data, config.seed * 1000 + k, config.fractions)]
        else:
            split = fl_data.label_skew_clients(data, config.clients_per_domain, config.alpha,
                                               config.seed * 1000 + k, config.fractions, min_per_client=20)
        for j, client in enumerate(split):
            clients.append(type(client)(f"{domain} {j}", client.train, client.val, client.test))
    return clients


def to_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 28, 28)`` -> float32 ``(N, 1, 28, 28)`` in [0, 1] (what surgery and black box take)."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):  # RGB hub images: grey, channels first
        x = x.mean(axis=-1)[:, None]
    return np.ascontiguousarray(x)


@dataclass(frozen=True)
class BlackBoxConfig:
    model: str = "tiny-resnet"  # tiny-resnet | fmbook/lit-fashion-minilm | a hub id (full)
    kind: str = "classifier"  # classifier | zero-shot (CLIP-like models)
    width: int = 8  # tiny-resnet width (the black box's size; 8 keeps queries cheap on a CPU)
    pretrain_per_class: int = 500  # clean Fashion-MNIST training images per class
    pretrain_epochs: int = 4
    lit_per_class: int = 300  # training images per class of the offline VLM
    lit_epochs: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in BLACKBOX_KINDS:
            raise ZooPFLError(f"unknown black-box kind {self.kind!r}; allowed: {', '.join(BLACKBOX_KINDS)}")
        if self.model not in OFFLINE_BLACKBOXES and "/" not in self.model:
            raise ZooPFLError(f"unknown black box {self.model!r}; allowed: {', '.join(OFFLINE_BLACKBOXES)} "
                              "or a Hugging Face hub id / saved folder (full profile)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pretrain_blackbox_encoder(config: BlackBoxConfig):
    """The ``tiny-resnet`` behind the black box: trained (once, cached) on clean Fashion-MNIST train."""
    from fmbook.core import vision

    train = _datasets.stratified_subsample(_datasets.load_fashion_mnist("train"), config.pretrain_per_class,
                                           seed=config.seed)
    enc = vision.EncoderConfig(width=config.width, epochs=config.pretrain_epochs, seed=config.seed)
    return vision.train_encoder(train, enc)


def lit_config(config: BlackBoxConfig):
    from fmbook.core import vlm

    return vlm.LiTConfig(train_per_class=config.lit_per_class, epochs=config.lit_epochs, eval_per_class=20,
                         seed=config.seed)


_CACHE: dict[str, BlackBox] = {}


def build_blackbox(config: BlackBoxConfig, class_names: Sequence[str] = _datasets.FASHION_MNIST_CLASSES) -> BlackBox:
    """The black box ``config`` names (built once per process; its counters are reset by users)."""
    from fmbook.zoopfl import blackbox as bb

    key = repr((config, tuple(class_names)))
    if key in _CACHE:
        return _CACHE[key]
    if config.model == "tiny-resnet":
        trained = pretrain_blackbox_encoder(config)
        box = bb.image_classifier_blackbox(trained, name=f"tiny-resnet (width {config.width})")
        box.info.update({"pretrain_per_class": config.pretrain_per_class, "pretrain_epochs": config.pretrain_epochs})
    elif config.model == "fmbook/lit-fashion-minilm":
        from fmbook.core import vlm

        model = vlm.load_vlm(config.model, lit_config(config))
        box = bb.vlm_blackbox(model, list(class_names))
    elif config.kind == "zero-shot":
        from fmbook.core import vlm

        box = bb.vlm_blackbox(vlm.load_vlm(config.model), list(class_names))
    else:
        box = bb.hub_image_classifier_blackbox(config.model)
    _CACHE[key] = box
    return box
