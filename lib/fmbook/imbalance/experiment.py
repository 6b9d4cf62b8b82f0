"""One experiment = long-tailed sets x seeds x methods, on tokens cached once per dataset.

>>> setup = prepare(model, pool, test, ratios=[10, 50, 100], seeds=[0, 1, 2], n_max=1280)
>>> rows = run_methods(setup, ["zero_shot", "linear_probe", "ce", "balanced_softmax", "crt"], ...)

Every trained model is cached (:mod:`fmbook.imbalance.train`), so the notebooks that follow (stage 2,
paper vs ours) reload the stage-1 models instead of training them again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from fmbook.core import vlm
from fmbook.core.datasets import ImageSet, fingerprint_arrays
from fmbook.imbalance import features as feat
from fmbook.imbalance import losses as L
from fmbook.imbalance import train as T
from fmbook.imbalance.data import ImbalanceError, LongTailSplit, ShotThresholds, long_tailed_splits
from fmbook.imbalance.models import HEADS, DecoderConfig

log = logging.getLogger(__name__)


def dataset_label(ratio: float) -> str:
    return f"ρ={ratio:g}"


@dataclass
class Setup:
    """The frozen model, the data and their cached tokens."""

    model: vlm.VisionLanguageModel
    pool: ImageSet
    test: ImageSet
    n_max: int
    thresholds: ShotThresholds
    splits: dict[tuple[int, float], LongTailSplit]  # (seed, ratio) -> split
    pool_rows: np.ndarray  # pool indices whose tokens are cached, sorted
    train_tokens: np.ndarray  # tokens of pool_rows
    test_tokens: np.ndarray
    test_embeddings: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    from_cache: dict[str, bool] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        return sorted({r for _, r in self.splits})

    @property
    def seeds(self) -> list[int]:
        return sorted({s for s, _ in self.splits})

    def tokens_of(self, split: LongTailSplit) -> np.ndarray:
        return self.train_tokens[np.searchsorted(self.pool_rows, split.indices)]

    @property
    def token_shape(self) -> tuple[int, int]:
        return tuple(self.train_tokens.shape[1:])


def prepare(model: vlm.VisionLanguageModel, pool: ImageSet, test: ImageSet, ratios: Sequence[float],
            seeds: Sequence[int], n_max: int, thresholds: ShotThresholds | None = None,
            device: str = "cpu") -> Setup:
    """Draw the long-tailed sets, then extract (or load) the tokens of every image they use, once."""
    if not seeds:
        raise ImbalanceError("seeds is empty; give at least one seed")
    thresholds = thresholds or ShotThresholds.scaled(n_max)
    splits = {}
    for seed in seeds:
        for ratio, split in long_tailed_splits(pool.labels, pool.num_classes, ratios, n_max, int(seed),
                                               thresholds, pool.name).items():
            splits[(int(seed), ratio)] = split
    rows = np.unique(np.concatenate([s.indices for s in splits.values()]))
    used = pool.take(rows, f"union of {len(splits)} long-tailed sets")
    seconds, cached = {}, {}
    start = time.perf_counter()
    train_tokens, cached["train_tokens"] = feat.cached_tokens(model, used, device=device)
    seconds["train_tokens"] = time.perf_counter() - start
    start = time.perf_counter()
    test_tokens, cached["test_tokens"] = feat.cached_tokens(model, test, device=device)
    seconds["test_tokens"] = time.perf_counter() - start
    _back_to_cpu(model)  # the extractor may have moved the tower to the GPU; the rest runs on the CPU
    start = time.perf_counter()
    test_emb, cached["test_embeddings"] = feat.cached_embeddings(model, test)
    seconds["test_embeddings"] = time.perf_counter() - start
    return Setup(model, pool, test, int(n_max), thresholds, splits, rows, train_tokens, test_tokens, test_emb,
                 seconds, cached)


def _back_to_cpu(model: vlm.VisionLanguageModel) -> None:
    module = getattr(model, "tower", None) or getattr(model, "model", None)
    if module is not None and hasattr(module, "to"):
        module.to("cpu")


@dataclass(frozen=True)
class MethodConfig:
    decoder: DecoderConfig = DecoderConfig()
    train: T.TrainConfig = T.TrainConfig()
    stage2: T.TrainConfig = T.TrainConfig()
    losses: L.LossConfig = L.LossConfig()
    zero_shot_templates: tuple[str, ...] = vlm.TRAIN_TEMPLATES


def zero_shot_predictions(setup: Setup, templates: Sequence[str]) -> np.ndarray:
    result = vlm.zero_shot_classify(setup.model, setup.test.images, list(setup.test.classes), list(templates),
                                    image_embeddings=setup.test_embeddings)
    return result.predictions


def run_methods(setup: Setup, methods: Sequence[str], config: MethodConfig | None = None,
                use_cache: bool = True, device: str = "cpu") -> pd.DataFrame:
    """One row per (ratio, seed, method): the metrics of :func:`fmbook.imbalance.train.evaluate`,
    the training seconds and whether the model came from the cache. Stage-2 heads need (and train,
    if missing) the stage-1 cross-entropy decoder of the same set and seed."""
    config = config or MethodConfig()
    methods = [T.check_method(m) for m in methods]
    rows = []
    zero_shot = zero_shot_predictions(setup, config.zero_shot_templates) if "zero_shot" in methods else None
    data_key = {"model": feat.model_key(setup.model), "test": setup.test.fingerprint}
    for (seed, ratio), split in sorted(setup.splits.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        tokens = setup.tokens_of(split)
        key_parts = {**data_key, "train": fingerprint_arrays(split.indices, split.labels), "pool": setup.pool.fingerprint}
        base = {"dataset": dataset_label(ratio), "ratio": ratio, "seed": seed, "n_train": len(split)}
        stage1: dict[str, tuple] = {}
        outputs: dict[str, tuple] = {}

        def get_stage1(loss: str, depth_zero: bool = False):
            name = "linear_probe" if depth_zero else loss
            if name not in stage1:
                decoder = DecoderConfig(0, config.decoder.num_heads, config.decoder.mlp_ratio) if depth_zero else config.decoder
                stage1[name] = T.cached_stage1(key_parts, tokens, split.labels, split.counts, loss, decoder,
                                               config.train, seed, config.losses, use_cache, setup.test_tokens, device)
            return stage1[name]

        def ce_outputs(which: str):
            if which not in outputs:
                outputs[which] = T.decoder_outputs(get_stage1("ce")[0], tokens if which == "train" else setup.test_tokens,
                                                   device=device)
            return outputs[which]

        for method in methods:
            if method == "zero_shot":
                pred, meta = zero_shot, {"seconds": 0.0, "from_cache": True}
            elif method in HEADS:
                model, meta1, _ = get_stage1("ce")
                _, meta, pred = T.cached_stage2(key_parts, model, meta1["key"], lambda: ce_outputs("train"),
                                                lambda: ce_outputs("test"), split.labels, split.counts, method,
                                                config.stage2, seed, config.losses, use_cache)
            else:
                _, meta, pred = get_stage1("ce" if method == "linear_probe" else method, method == "linear_probe")
            metrics = T.evaluate(pred, setup.test.labels, split.groups)
            log.info("%s seed %s %s: %.3f (%.1f s, cached %s)", dataset_label(ratio), seed, method,
                     metrics["overall"], meta["seconds"], meta["from_cache"])
            rows.append({**base, "method": method, "label": T.METHOD_LABELS[method], "stage": T.METHOD_STAGE[method],
                         **metrics, "seconds": meta["seconds"], "from_cache": meta["from_cache"]})
    return pd.DataFrame(rows)


def counts_frame(setup: Setup) -> pd.DataFrame:
    """Training images per class for every (ratio, seed): the figure of the long-tailed profiles."""
    rows = []
    for (seed, ratio), split in sorted(setup.splits.items()):
        for c, name in enumerate(setup.pool.classes):
            rows.append({"dataset": dataset_label(ratio), "ratio": ratio, "seed": seed, "class": name,
                         "rank": int(split.class_rank[c]), "count": int(split.counts[c]), "group": split.groups[c]})
    return pd.DataFrame(rows)


def describe_config(config: MethodConfig) -> dict:
    return {"decoder": asdict(config.decoder), "train": asdict(config.train), "stage2": asdict(config.stage2),
            "losses": asdict(config.losses), "zero_shot_templates": list(config.zero_shot_templates)}


TEMPLATE_SETS = {"train": vlm.TRAIN_TEMPLATES, "heldout": vlm.HELDOUT_TEMPLATES, "name": vlm.CLASS_NAME_TEMPLATES}


def templates(name: str) -> tuple[str, ...]:
    """Zero-shot prompt sets: ``train`` (CLIP-style captions, ensembled), ``heldout``, ``name``."""
    if name not in TEMPLATE_SETS:
        raise ImbalanceError(f"unknown zero-shot template set {name!r}; allowed: {', '.join(TEMPLATE_SETS)}")
    return tuple(TEMPLATE_SETS[name])


def load_model(vlm_name: str, vlm_per_class: int = 2000, vlm_epochs: int = 6, seed: int = 0,
               verbose: bool = False) -> tuple[vlm.VisionLanguageModel, vlm.LiTConfig | None]:
    """The frozen VLM: ours (trained or loaded from the cache, the same recipe as the book's models
    appendix) or a CLIP hub id / folder (``full``)."""
    if vlm_name == vlm.OFFLINE_NAME:
        config = vlm.LiTConfig(epochs=vlm_epochs, train_per_class=vlm_per_class, seed=seed, data_seed=seed)
        return vlm.load_vlm(vlm_name, config, verbose=verbose), config
    return vlm.load_vlm(vlm_name), None


def load_data(dataset: str, lit_config: vlm.LiTConfig | None, test_per_class: int) -> tuple[ImageSet, ImageSet]:
    """The pool the long-tailed sets are drawn from, and the balanced test set.

    ``fashion-mnist``: the training images our VLM did not train on, and the test split. A hub id
    (``full``, e.g. ``uoft-cs/cifar100``): its train and test splits.
    """
    from fmbook.core.datasets import load_image_dataset
    from fmbook.imbalance.data import balanced_test_set, fashion_mnist_pool

    if dataset == "fashion-mnist":
        pool = fashion_mnist_pool(lit_config)
    else:
        pool = load_image_dataset(dataset, "train")
    test = balanced_test_set(load_image_dataset(dataset, "test"), test_per_class)
    return pool, test


def method_config(decoder_depth: int = 3, decoder_heads: int = 4, decoder_mlp_ratio: float = 0.5,
                  lr: float = 0.03, batch_size: int = 256, iterations: int = 8192, warmup: int = 512,
                  stage2_iterations: int | None = None, zero_shot: str = "train") -> MethodConfig:
    """A :class:`MethodConfig` from a notebook's flat parameters (stage 2 uses the same recipe)."""
    train = T.TrainConfig(lr=lr, batch_size=batch_size, iterations=iterations, warmup=warmup)
    s2 = stage2_iterations or iterations
    stage2 = T.TrainConfig(lr=lr, batch_size=batch_size, iterations=s2, warmup=min(warmup, s2 - 1))
    return MethodConfig(DecoderConfig(decoder_depth, decoder_heads, decoder_mlp_ratio), train, stage2,
                        L.LossConfig(), templates(zero_shot))
