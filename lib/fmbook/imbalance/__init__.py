"""Exploring Vision-Language Models for Imbalanced Learning (Wang et al., IJCV 2024, arXiv 2304.01457).

A frozen vision-language model's image tower, a lightweight transformer decoder over its output
tokens, and the classic imbalanced-learning losses (stage 1) and re-balancing heads (stage 2),
compared with zero-shot and a linear probe on long-tailed training sets.

* :mod:`~fmbook.imbalance.data`: long-tailed sets (exponential profile), many / medium / few groups;
* :mod:`~fmbook.imbalance.features`: the tower's output tokens, cached once per dataset;
* :mod:`~fmbook.imbalance.losses`: CE, class-balanced sampling / weights, Focal, Balanced Softmax,
  GRW, LADE, LDAM;
* :mod:`~fmbook.imbalance.models`: the decoder and the cRT, LWS, DisAlign and MARC heads;
* :mod:`~fmbook.imbalance.train`: the official optimisation recipe, evaluation, cached runs;
* :mod:`~fmbook.imbalance.experiment`: sets x seeds x methods;
* :mod:`~fmbook.imbalance.analysis`: intervals over seeds and :func:`claims`.

Not to be confused with the official code's package, also importable as ``imblearn`` (the name of
imbalanced-learn, which this package uses): the official code is not vendored.
"""

from fmbook.imbalance.analysis import ClaimPlan, claim_sentence, claims, summarise
from fmbook.imbalance.data import (GROUPS, ImbalanceError, LongTailSplit, ShotThresholds, balanced_test_set,
                                   check_ratio, exponential_counts, fashion_mnist_pool, long_tailed_splits)
from fmbook.imbalance.experiment import MethodConfig, Setup, counts_frame, dataset_label, prepare, run_methods
from fmbook.imbalance.losses import LOSS_LABELS, LOSSES, LossConfig, make_loss
from fmbook.imbalance.models import HEAD_LABELS, HEADS, DecoderClassifier, DecoderConfig
from fmbook.imbalance.train import METHOD_LABELS, METHODS, METRICS, TrainConfig, evaluate

__all__ = ["ClaimPlan", "DecoderClassifier", "DecoderConfig", "GROUPS", "HEADS", "HEAD_LABELS", "ImbalanceError",
           "LOSSES", "LOSS_LABELS", "LongTailSplit", "LossConfig", "METHODS", "METHOD_LABELS", "METRICS",
           "MethodConfig", "Setup", "ShotThresholds", "TrainConfig", "balanced_test_set", "check_ratio",
           "claim_sentence", "claims", "counts_frame", "dataset_label", "evaluate", "exponential_counts",
           "fashion_mnist_pool", "long_tailed_splits", "make_loss", "prepare", "run_methods", "summarise"]
