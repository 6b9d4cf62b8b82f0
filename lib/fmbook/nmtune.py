"""NMTune: label noise in pre-training and its black-box mitigation (Chen et al., ICLR 2024,
arXiv 2309.17002).

Three parts, in the order of the paper:

1. **Noisy pre-training** (paper section 2.1): :func:`inject_symmetric_noise` flips a share of the
   pre-training labels; :func:`pretrain_noisy_encoder` trains a :mod:`fmbook.core.vision` encoder on them.
2. **Feature spectrum** (section 2.3): :func:`spectrum_metrics` -- singular value entropy (SVE) and
   largest singular value ratio (LSVR) of the frozen features.
3. **NMTune** (section 3): :class:`NMTuneHead` and :func:`train_head`, which also trains the two
   baselines, a linear probe and a plain MLP head, on precomputed (cached) features.

The chapter's downstream protocol (which data is in-domain, which is out-of-domain) is at the end:
:class:`TransferSetup`, :func:`downstream_tasks`, :func:`evaluate_heads`.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmbook.core import datasets as ds
from fmbook.core.vision import EncoderConfig, TrainedEncoder, cached_features, deterministic, train_encoder

# =========================================================================== 1. label noise


@dataclass(frozen=True)
class NoisyLabels:
    """Labels after symmetric noise injection.

    ``requested_rate``: the noise ratio asked for. ``resampled``: which labels were redrawn
    (exactly ``round(requested_rate * N)`` of them). ``realised_rate``: the share that actually
    differs from the truth, expected ``requested_rate * (K - 1) / K`` because a redrawn label can
    land on the true class.
    """

    labels: np.ndarray
    true_labels: np.ndarray
    resampled: np.ndarray
    requested_rate: float
    num_classes: int
    seed: int

    @property
    def resampled_rate(self) -> float:
        return float(self.resampled.mean()) if len(self.labels) else 0.0

    @property
    def realised_rate(self) -> float:
        return float((self.labels != self.true_labels).mean()) if len(self.labels) else 0.0

    @property
    def expected_realised_rate(self) -> float:
        return self.requested_rate * (self.num_classes - 1) / self.num_classes


def inject_symmetric_noise(labels: np.ndarray, noise_rate: float, num_classes: int, seed: int) -> NoisyLabels:
    """Symmetric label noise as in the paper's noisy ImageNet-1K (section 2.1).

    A seeded permutation picks exactly ``round(noise_rate * N)`` samples; each gets a label drawn
    uniformly from all ``num_classes`` classes, so it may equal the true label (the realised flip
    rate is ``noise_rate * (K-1)/K``; both rates are exposed on the result).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    rng = np.random.default_rng(seed)
    count = int(round(noise_rate * len(labels)))
    chosen = rng.permutation(len(labels))[:count]
    noisy = labels.copy()
    noisy[chosen] = rng.integers(0, num_classes, size=count)
    resampled = np.zeros(len(labels), dtype=bool)
    resampled[chosen] = True
    return NoisyLabels(noisy, labels, resampled, float(noise_rate), num_classes, seed)


def noise_confusion(true_labels: np.ndarray, noisy_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised matrix ``P[i, j]`` = share of true class ``i`` carrying label ``j``."""
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true_labels, noisy_labels), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


# =========================================================================== 2. spectrum


def prepare_features(features: np.ndarray) -> np.ndarray:
    """The official code's preprocessing before the SVD: L2-normalise each feature vector, then
    subtract each vector's own mean (over its dimensions, ``features.mean(dim=1)``)."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x - x.mean(axis=1, keepdims=True)


def singular_values(features: np.ndarray, prepare: bool = True) -> np.ndarray:
    """Singular values (descending) of the ``(N, D)`` feature matrix (after :func:`prepare_features`)."""
    x = prepare_features(features) if prepare else np.asarray(features, dtype=np.float64)
    return np.linalg.svd(x, compute_uv=False)


def singular_value_entropy(sigma: np.ndarray) -> float:
    """SVE = -sum_i p_i log p_i, p_i = sigma_i / sum_j sigma_j (section 2.3). Higher: flatter spectrum."""
    sigma = np.asarray(sigma, dtype=np.float64)
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def largest_singular_value_ratio(sigma: np.ndarray) -> float:
    """LSVR = -log(sigma_1 / sum_j sigma_j) (section 2.3). Lower: the top direction dominates more."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return float(-np.log(sigma.max() / sigma.sum()))


@dataclass(frozen=True)
class SpectrumMetrics:
    singular_values: np.ndarray
    sve: float
    lsvr: float

    @property
    def normalised(self) -> np.ndarray:
        return self.singular_values / self.singular_values.sum()


def spectrum_metrics(features: np.ndarray) -> SpectrumMetrics:
    """Spectrum, SVE and LSVR of features, preprocessed as in the official code."""
    sigma = singular_values(features)
    return SpectrumMetrics(sigma, singular_value_entropy(sigma), largest_singular_value_ratio(sigma))


# =========================================================================== 3. NMTune


@dataclass(frozen=True)
class NMTuneConfig:
    """NMTune on frozen features (section 3; defaults: the paper's and official code's values).

    Loss (eq. 2-5): CE + consistency_weight * MSE(normalize(z), normalize(f)) +
    covariance_weight * (1/D) sum_{i != j} Cov(z)_ij^2 - spectral_weight * mean_{k<=top_k} sigma_k(z)/sum sigma(z).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 30
    mlp_ratio: int = 4
    scale_init: float = 1.0
    consistency_weight: float = 1.0
    covariance_weight: float = 0.04
    spectral_weight: float = 0.001
    top_k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "mlp_ratio", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"NMTuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"NMTuneConfig.lr must be > 0, got {self.lr}")
        if self.batch_size < 2:
            raise ValueError("NMTuneConfig.batch_size must be >= 2 (BatchNorm and the covariance need 2 rows)")


def mlp_head_config(config: NMTuneConfig | None = None) -> NMTuneConfig:
    """The plain MLP-head baseline: NMTune's architecture with all three regularizer weights at 0."""
    return replace(config or NMTuneConfig(), consistency_weight=0.0, covariance_weight=0.0, spectral_weight=0.0)


@dataclass(frozen=True)
class LinearProbeConfig:
    """Linear probe baseline (section 2.2): a linear classifier on f, AdamW lr 0.01, wd 1e-4, 30 epochs."""

    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 30
    seed: int = 0


class NMTuneHead(nn.Module):
    """z = s * MLP(f) + f with MLP = Linear(D, rD)-BatchNorm-ReLU-Linear(rD, D), s per-dimension
    (init ``scale_init``), and a linear classifier on z (kaiming-uniform weights, zero bias)."""

    def __init__(self, dim: int, num_classes: int, mlp_ratio: int = 4, scale_init: float = 1.0) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.scale = nn.Parameter(torch.full((1, dim), float(scale_init)))
        self.classifier = _classifier(dim, num_classes)

    def transform(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * self.mlp(f) + f

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.transform(f)
        return z, self.classifier(z)


class LinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = _classifier(dim, num_classes)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return f, self.classifier(f)


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    layer = nn.Linear(dim, num_classes)
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight)
        layer.bias.zero_()
    return layer


def consistency_loss(z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """MSE between L2-normalised z and the detached, L2-normalised pre-trained features f (eq. 3)."""
    return F.mse_loss(F.normalize(z, dim=1), F.normalize(f.detach(), dim=1))


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """(1/D) * sum of squared off-diagonal entries of the (unbiased) covariance of z (eq. 4)."""
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (z.shape[0] - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / z.shape[1]


def dominant_singular_values(z: torch.Tensor, top_k: int = 5) -> torch.Tensor:
    """Mean of the top-k singular values of z divided by their sum (eq. 5; the loss subtracts it)."""
    sigma = torch.linalg.svdvals(z)
    return (sigma / sigma.sum())[:top_k].mean()


def nmtune_loss(z: torch.Tensor, f: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                config: NMTuneConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Total NMTune loss and its terms (unweighted). A term with weight 0 is not computed."""
    ce = F.cross_entropy(logits, labels)
    total, terms = ce, {"ce": ce.item()}
    if config.consistency_weight:
        mse = consistency_loss(z, f)
        total = total + config.consistency_weight * mse
        terms["consistency"] = mse.item()
    if config.covariance_weight:
        cov = covariance_loss(z)
        total = total + config.covariance_weight * cov
        terms["covariance"] = cov.item()
    if config.spectral_weight:
        dom = dominant_singular_values(z, config.top_k)
        total = total - config.spectral_weight * dom
        terms["dominant_sv"] = dom.item()
    return total, terms


HEAD_METHODS = ("linear", "mlp", "nmtune")


@dataclass
class TrainedHead:
    method: str
    module: nn.Module
    config: NMTuneConfig | LinearProbeConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def predict(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        self.module.eval()
        out = []
        with torch.no_grad(), deterministic(0):
            for start in range(0, len(features), batch_size):
                _, logits = self.module(torch.from_numpy(np.asarray(features[start:start + batch_size], np.float32)))
                out.append(logits.argmax(1))
        return torch.cat(out).numpy() if out else np.zeros(0, np.int64)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(features) == np.asarray(labels)).mean())

    def transform(self, features: np.ndarray) -> np.ndarray:
        """z for features (the identity for a linear probe)."""
        self.module.eval()
        with torch.no_grad(), deterministic(0):
            z, _ = self.module(torch.from_numpy(np.asarray(features, np.float32)))
        return z.numpy()


def default_head_config(method: str, seed: int = 0, epochs: int | None = None) -> NMTuneConfig | LinearProbeConfig:
    """The paper's configuration of a head method (``linear``, ``mlp`` or ``nmtune``)."""
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown head method {method!r}; allowed: {', '.join(HEAD_METHODS)}")
    config: NMTuneConfig | LinearProbeConfig
    config = {"linear": LinearProbeConfig, "nmtune": NMTuneConfig}.get(method, NMTuneConfig)(seed=seed)
    if method == "mlp":
        config = mlp_head_config(config)
    return replace(config, epochs=epochs) if epochs is not None else config


def train_head(features: np.ndarray, labels: np.ndarray, num_classes: int,
               config: NMTuneConfig | LinearProbeConfig, method: str | None = None) -> TrainedHead:
    """Train a head on frozen features with AdamW and a per-step cosine schedule (no warm-up).

    ``method``: ``linear`` for a :class:`LinearProbeConfig`; ``nmtune`` (or ``mlp`` when all
    regularizer weights are 0) for an :class:`NMTuneConfig`. Deterministic given ``config.seed``.
    A final batch of one sample is skipped (BatchNorm needs two).
    """
    if method is None:
        method = "linear" if isinstance(config, LinearProbeConfig) else (
            "mlp" if not (config.consistency_weight or config.covariance_weight or config.spectral_weight) else "nmtune")
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown head method {method!r}; allowed: {', '.join(HEAD_METHODS)}")
    if (method == "linear") != isinstance(config, LinearProbeConfig):
        raise TypeError(f"method {method!r} needs a {'LinearProbeConfig' if method == 'linear' else 'NMTuneConfig'}")
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be (N, D) with N = len(labels); got {features.shape} and {labels.shape}")
    start = time.perf_counter()
    with deterministic(config.seed):
        dim = features.shape[1]
        if method == "linear":
            module: nn.Module = LinearHead(dim, num_classes)
        else:
            module = NMTuneHead(dim, num_classes, config.mlp_ratio, config.scale_init)
        optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = max(1, len(features) // config.batch_size + (len(features) % config.batch_size > 1))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        x_all, y_all = torch.from_numpy(features), torch.from_numpy(labels)
        generator = torch.Generator().manual_seed(config.seed)
        history: dict[str, list[float]] = {}
        for _ in range(config.epochs):
            module.train()
            order = torch.randperm(len(features), generator=generator)
            sums: dict[str, float] = {}
            batches = 0
            for begin in range(0, len(features), config.batch_size):
                index = order[begin:begin + config.batch_size]
                if len(index) < 2:
                    continue
                f, y = x_all[index], y_all[index]
                z, logits = module(f)
                if method == "linear":
                    loss = F.cross_entropy(logits, y)
                    terms = {"ce": loss.item()}
                else:
                    loss, terms = nmtune_loss(z, f, logits, y, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                batches += 1
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value
            for name, value in sums.items():
                history.setdefault(name, []).append(value / max(1, batches))
    module.eval()
    return TrainedHead(method, module, config, history, time.perf_counter() - start)


# =========================================================================== chapter protocol

#: Pre-training sees 6 Fashion-MNIST classes; the other 4 are new to every encoder (ID transfer).
PRETRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 5, 8, 9)  # T-shirt, Trouser, Pullover, Sandal, Bag, Ankle boot
HELDOUT_CLASSES: tuple[int, ...] = (3, 4, 6, 7)  # Dress, Coat, Shirt, Sneaker
DOWNSTREAM_SPLIT_SEED = 2024  # fixed: the probe/eval halves of the test split never change


@dataclass(frozen=True)
class PretrainSetup:
    """What the encoders are pre-trained on.

    Local: ``pretrain_per_class`` images of each of :data:`PRETRAIN_CLASSES` from the Fashion-MNIST
    *train* split (the downstream tasks use only the *test* split, so no image is shared), and a
    clean held-out check set of ``eval_per_class`` images per class from the remaining train images.
    Full: ``dataset`` is a hub id (e.g. ``uoft-cs/cifar100``) and all of its classes are used.
    """

    dataset: str = "fashion-mnist"
    pretrain_per_class: int = 400
    eval_per_class: int = 100
    data_seed: int = 0

    def data(self) -> tuple[ds.ImageSet, ds.ImageSet]:
        """(pre-training set, clean check set); computed once per process for each setup."""
        return _pretrain_data(self)


@functools.lru_cache(maxsize=4)
def _pretrain_data(setup: PretrainSetup) -> tuple[ds.ImageSet, ds.ImageSet]:
    train = ds.load_image_dataset(setup.dataset, "train")
    if setup.dataset == "fashion-mnist":
        train = ds.select_classes(train, PRETRAIN_CLASSES)
    total = setup.pretrain_per_class + setup.eval_per_class
    picked = ds.stratified_subsample(train, total, setup.data_seed)
    return ds.stratified_split(picked, setup.eval_per_class / total, setup.data_seed)


@dataclass
class NoisyEncoder:
    noise_rate: float
    seed: int
    trained: TrainedEncoder
    noisy: NoisyLabels


def pretrain_noisy_encoder(noise_rate: float, seed: int, setup: PretrainSetup, config: EncoderConfig,
                           device: str = "cpu") -> NoisyEncoder:
    """Inject symmetric noise (seeded by ``seed``) into the pre-training labels and train (or load
    from the cache) an encoder with ``config`` (its seed replaced by ``seed``)."""
    pretrain, check = setup.data()
    noisy = inject_symmetric_noise(pretrain.labels, noise_rate, pretrain.num_classes, seed=10_000 + seed)
    trained = train_encoder(pretrain, replace(config, seed=seed), train_labels=noisy.labels, eval_set=check,
                            device=device)
    return NoisyEncoder(float(noise_rate), int(seed), trained, noisy)


def pretrain_grid(noise_rates: list[float], seeds: list[int], setup: PretrainSetup, config: EncoderConfig,
                  device: str = "cpu") -> list[NoisyEncoder]:
    """One encoder per (noise rate, seed), in that order; cached ones are loaded."""
    for rate in noise_rates:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"noise_ratios must lie in [0, 1), got {rate}")
    if not seeds:
        raise ValueError("seeds must name at least one pre-training seed")
    return [pretrain_noisy_encoder(rate, seed, setup, config, device) for rate in noise_rates for seed in seeds]


def encoder_description(config: EncoderConfig, setup: PretrainSetup) -> tuple[str, dict]:
    """A short model id for provenance (``run.uses_model``) and the facts that identify it."""
    if config.backbone == "tiny-resnet":
        name = f"tiny-resnet-w{config.width} (pre-trained in this chapter)"
    else:
        name = f"{config.backbone} (noisy-label tuned in this chapter)"
    return name, {"pretrain_data": setup.dataset, "per_class": setup.pretrain_per_class,
                  "epochs": config.epochs, "lr": config.lr}


@dataclass(frozen=True)
class Task:
    """A downstream task: a probe set to train a head on and evaluation sets (name -> (set, domain))."""

    name: str
    probe: ds.ImageSet
    evals: dict[str, tuple[ds.ImageSet, str]]


@dataclass(frozen=True)
class TransferSetup:
    """The downstream tasks of the chapter.

    In-domain (ID) -- a new label space on images from the pre-training distribution:
      ``heldout-4``: the 4 Fashion-MNIST classes no encoder saw in pre-training;
      ``fmnist-10``: all 10 classes (4 of them new), clean test images.
    Out-of-domain (OOD) -- shifted inputs:
      ``digits``: scikit-learn's handwritten digits (a head trained and tested on digits);
      ``invert``, ``sketch``, ``blur``, ``rotate``: the ``fmnist-10`` head evaluated on style-shifted
      test images (:data:`fmbook.core.datasets.STYLE_SHIFTS`), as ImageNet-R/-Sketch are used in the paper.
    The Fashion-MNIST *test* split is halved once (seed :data:`DOWNSTREAM_SPLIT_SEED`): heads train on
    one half and are evaluated on the other. Full profile: ``id_dataset`` is a hub id (e.g.
    ``uoft-cs/cifar10``; its train split feeds the head, its test split the evaluation) and the
    held-out-classes task is dropped.
    """

    id_dataset: str = "fashion-mnist"
    probe_per_class: int = 100
    eval_per_class: int = 200
    shifts: tuple[str, ...] = ("invert", "sketch", "blur", "rotate")
    include_digits: bool = True
    seed: int = 0


def downstream_tasks(setup: TransferSetup) -> list[Task]:
    """Build the tasks of :class:`TransferSetup` (deterministic given the setup)."""
    for shift in setup.shifts:
        if shift not in ds.STYLE_SHIFTS:
            raise ValueError(f"unknown shift {shift!r} in TransferSetup.shifts; allowed: {', '.join(ds.STYLE_SHIFTS)}")
    tasks = []
    if setup.id_dataset == "fashion-mnist":
        probe_pool, eval_pool = ds.stratified_split(ds.load_fashion_mnist("test"), 0.5, DOWNSTREAM_SPLIT_SEED)
        held_probe = ds.stratified_subsample(ds.select_classes(probe_pool, HELDOUT_CLASSES), setup.probe_per_class, setup.seed)
        held_eval = ds.stratified_subsample(ds.select_classes(eval_pool, HELDOUT_CLASSES), setup.eval_per_class, setup.seed)
        tasks.append(Task("heldout-4", held_probe, {"heldout-4": (held_eval, "ID")}))
        main_name = "fmnist-10"
    else:
        probe_pool = ds.load_image_dataset(setup.id_dataset, "train")
        eval_pool = ds.load_image_dataset(setup.id_dataset, "test")
        main_name = setup.id_dataset.split("/")[-1]
    probe = ds.stratified_subsample(probe_pool, setup.probe_per_class, setup.seed)
    clean_eval = ds.stratified_subsample(eval_pool, setup.eval_per_class, setup.seed)
    evals = {main_name: (clean_eval, "ID")}
    for shift in setup.shifts:
        evals[shift] = (ds.style_shift(clean_eval, shift), "OOD")
    tasks.append(Task(main_name, probe, evals))
    if setup.include_digits:
        digits_probe_pool, digits_eval_pool = ds.stratified_split(ds.load_digits_28(), 0.5, DOWNSTREAM_SPLIT_SEED)
        per_class = min(setup.probe_per_class, int(np.bincount(digits_probe_pool.labels).min()))
        eval_per_class = min(setup.eval_per_class, int(np.bincount(digits_eval_pool.labels).min()))
        tasks.append(Task("digits", ds.stratified_subsample(digits_probe_pool, per_class, setup.seed),
                          {"digits": (ds.stratified_subsample(digits_eval_pool, eval_per_class, setup.seed), "OOD")}))
    return tasks


def evaluate_heads(encoder: TrainedEncoder, tasks: list[Task], config: NMTuneConfig | LinearProbeConfig,
                   method: str | None = None, device: str = "cpu") -> dict[str, float]:
    """Train one head per task on the encoder's cached features; accuracy on every evaluation set,
    plus ``ID`` and ``OOD`` (unweighted means over the evaluation sets of each domain)."""
    scores: dict[str, float] = {}
    domains: dict[str, list[float]] = {"ID": [], "OOD": []}
    for task in tasks:
        probe_features = cached_features(encoder, task.probe, device=device)
        head = train_head(probe_features, task.probe.labels, task.probe.num_classes, config, method)
        for name, (data, domain) in task.evals.items():
            accuracy = head.accuracy(cached_features(encoder, data, device=device), data.labels)
            scores[name] = accuracy
            domains[domain].append(accuracy)
    for domain, values in domains.items():
        scores[domain] = float(np.mean(values)) if values else float("nan")
    return scores


def mean_confidence_interval(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t confidence interval over seeds (0 half-width for one value)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, float(half)


def config_dict(config: object) -> dict:
    """A dataclass config as a plain dict (for ``run.log`` and the results file)."""
    return asdict(config)  # type: ignore[arg-type]


# =========================================================================== grids (what the notebooks call)


def _tasks_identity(tasks: list[Task]) -> list:
    return [[t.name, t.probe.fingerprint, sorted((n, d.fingerprint, dom) for n, (d, dom) in t.evals.items())]
            for t in tasks]


def cached_head_scores(encoder: TrainedEncoder, tasks: list[Task], config: NMTuneConfig | LinearProbeConfig,
                       method: str | None = None, device: str = "cpu") -> dict[str, float]:
    """:func:`evaluate_heads`, cached as JSON under ``cache_dir()/heads/`` keyed by the encoder, the
    tasks' data, the head config and method, and the code of this module and :mod:`fmbook.core.vision`."""
    import hashlib
    import json
    from pathlib import Path

    from fmbook.core.paths import cache_dir
    from fmbook.core.vision import code_version

    own_code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    payload = {"encoder": encoder.key, "tasks": _tasks_identity(tasks), "config": asdict(config),
               "config_type": type(config).__name__, "method": method, "code": [own_code, code_version()]}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "heads" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    scores = evaluate_heads(encoder, tasks, config, method, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{time.time_ns()}.json")
    tmp.write_text(json.dumps(scores))
    tmp.replace(path)
    return scores


def transfer_grid(encoders: list[NoisyEncoder], tasks: list[Task],
                  heads: dict[str, NMTuneConfig | LinearProbeConfig], device: str = "cpu"):
    """Accuracy of every head (name -> config) on every encoder: a long ``pandas.DataFrame`` with
    columns noise_rate, seed, head, eval_set, domain, accuracy (eval_set ``ID``/``OOD``: the means)."""
    import pandas as pd

    domain_of = {name: dom for t in tasks for name, (_, dom) in t.evals.items()}
    rows = []
    for item in encoders:
        for head_name, config in heads.items():
            scores = cached_head_scores(item.trained, tasks, config, device=device)
            for eval_set, accuracy in scores.items():
                rows.append({"noise_rate": item.noise_rate, "seed": item.seed, "head": head_name,
                             "eval_set": eval_set, "domain": domain_of.get(eval_set, eval_set),
                             "accuracy": accuracy})
    return pd.DataFrame(rows)


def summarise_over_seeds(frame, value: str = "accuracy", by: tuple[str, ...] = ("head", "eval_set", "noise_rate"),
                         level: float = 0.95):
    """Mean, confidence-interval half-width and seed count of ``value`` per group."""
    import pandas as pd

    rows = []
    for keys, group in frame.groupby(list(by), sort=True):
        mean, half = mean_confidence_interval(group[value].to_numpy(), level)
        rows.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))),
                     "mean": mean, "ci": half, "n_seeds": len(group)})
    return pd.DataFrame(rows)


def spectrum_grid(encoders: list[NoisyEncoder], data: ds.ImageSet, device: str = "cpu"):
    """SVE, LSVR and the normalised spectrum of each encoder's features on ``data``.

    Returns a ``pandas.DataFrame`` (noise_rate, seed, sve, lsvr, spectrum) with one row per encoder.
    """
    import pandas as pd

    rows = []
    for item in encoders:
        metrics = spectrum_metrics(cached_features(item.trained, data, device=device))
        rows.append({"noise_rate": item.noise_rate, "seed": item.seed, "sve": metrics.sve,
                     "lsvr": metrics.lsvr, "spectrum": metrics.normalised})
    return pd.DataFrame(rows)


def ablation_configs(base: NMTuneConfig | None = None) -> dict[str, NMTuneConfig]:
    """NMTune and NMTune without each regularizer (and without all three: the MLP head)."""
    base = base or NMTuneConfig()
    return {
        "NMTune": base,
        "w/o consistency": replace(base, consistency_weight=0.0),
        "w/o covariance": replace(base, covariance_weight=0.0),
        "w/o dominant SV": replace(base, spectral_weight=0.0),
        "w/o all (MLP)": mlp_head_config(base),
    }


def claim_verdict(differences: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, bool | None]:
    """Mean, CI half-width and verdict of paired differences (ours minus reference, signed so that
    the claim predicts a positive value): True if the interval lies above 0, False if below, None
    when it contains 0 (the effect is not resolved at this sample size)."""
    mean, half = mean_confidence_interval(differences, level)
    if len(np.asarray(differences)) < 2:
        return mean, half, None
    if mean - half > 0:
        return mean, half, True
    if mean + half < 0:
        return mean, half, False
    return mean, half, None
