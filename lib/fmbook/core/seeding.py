"""Seeds and device selection, the same way in every notebook."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; on CPU also ask torch for deterministic algorithms."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # the library works without torch for parsing-only chapters
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


DEVICES = ("auto", "cpu", "cuda", "mps")


def select_device(preference: str = "auto") -> str:
    """``auto``: CUDA if present, then Apple MPS, then CPU. Returns a torch device string."""
    if preference not in DEVICES:
        raise ValueError(f"unknown device {preference!r}; allowed: {', '.join(DEVICES)}")
    try:
        import torch
    except ImportError:
        return "cpu"
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    if preference in ("auto", "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    if preference != "auto" and preference != "cpu":
        raise RuntimeError(f"device {preference!r} was asked for but is not available here")
    return "cpu"


def has_gpu() -> bool:
    return select_device() != "cpu"
