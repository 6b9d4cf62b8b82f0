"""Output tokens of a frozen image tower, extracted once per dataset and cached.

* ours (``fmbook/lit-fashion-minilm``): the image tower is a TinyResNet; its last feature map
  ``(4w, 4, 4)`` gives 16 spatial tokens of width ``4w``. Token 0 is their average, the feature that
  the tower projects into the joint space (the analogue of CLIP's class token). :func:`tiny_resnet_tokens`
  rebuilds the encoder's forward pass without its final pooling (a test checks that token 0 equals
  the encoder's output).
* CLIP from the hub: ``vision_model(pixel_values).last_hidden_state``, all ``1 + P`` tokens before the
  final layer norm, exactly what the official decoder reads.

:func:`cached_tokens` stores float16 arrays under ``cache_dir()/imbalance/tokens/<model key>/``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from fmbook.core import vision, vlm
from fmbook.core.datasets import ImageSet
from fmbook.core.paths import cache_dir
from fmbook.imbalance.data import ImbalanceError


def code_version() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def tiny_resnet_tokens(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` in [0, 1] -> ``(N, 1 + h*w, D)``: the pooled feature, then the feature map's cells."""
    if not isinstance(encoder, vision.TinyResNet):
        raise ImbalanceError(f"tiny_resnet_tokens needs a TinyResNet, got {type(encoder).__name__}")
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    fmap = encoder.stages(encoder.stem((x - 0.5) / 0.5))  # the encoder's forward without the pooling
    cells = fmap.flatten(2).transpose(1, 2)  # (N, h*w, D)
    return torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)


def model_key(model: vlm.VisionLanguageModel) -> str:
    key = getattr(model, "key", None) or model.name
    return hashlib.sha256(f"{key}|{code_version()}".encode()).hexdigest()[:16]


def extract_tokens(model: vlm.VisionLanguageModel, images: np.ndarray, batch_size: int = 512,
                   device: str = "cpu") -> np.ndarray:
    """All output tokens of the frozen image tower, ``(N, T, D)`` float16."""
    chunks: list[np.ndarray] = []
    if isinstance(model, vlm.LiTModel):
        encoder = model.tower.encoder.to(device).eval()
        with torch.no_grad(), vision.deterministic(0, strict=str(device) == "cpu"):
            for start in range(0, len(images), batch_size):
                x = vision.images_to_tensor(images[start:start + batch_size]).to(device)
                chunks.append(tiny_resnet_tokens(encoder, x).float().cpu().numpy().astype(np.float16))
    elif isinstance(model, vlm.HubCLIP):
        clip = model.model.to(device).eval()
        images = np.asarray(images)
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                pixels = model.processor(images=list(images[start:start + batch_size]), return_tensors="pt")["pixel_values"]
                out = clip.vision_model(pixel_values=pixels.to(device, dtype=next(clip.parameters()).dtype))
                chunks.append(out.last_hidden_state.float().cpu().numpy().astype(np.float16))
    else:
        raise ImbalanceError(f"no token extractor for {type(model).__name__}; allowed: LiTModel "
                             f"({vlm.OFFLINE_NAME}) or HubCLIP (a CLIP hub id)")
    if not chunks:
        raise ImbalanceError("no images to extract tokens from")
    return np.concatenate(chunks)


def _cached(path: Path, compute) -> tuple[np.ndarray, bool]:
    if path.is_file():
        return np.load(path), True
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{time.time_ns()}.npy")
    np.save(tmp, array)
    tmp.replace(path)
    return array, False


def cached_tokens(model: vlm.VisionLanguageModel, data: ImageSet, batch_size: int = 512,
                  device: str = "cpu") -> tuple[np.ndarray, bool]:
    """:func:`extract_tokens` of ``data``, cached by model and data fingerprint; ``(tokens, from_cache)``."""
    path = cache_dir() / "imbalance" / "tokens" / model_key(model) / f"{data.fingerprint}.npy"
    return _cached(path, lambda: extract_tokens(model, data.images, batch_size, device))


def cached_embeddings(model: vlm.VisionLanguageModel, data: ImageSet) -> tuple[np.ndarray, bool]:
    """The model's L2-normalised image embeddings of ``data`` (for zero-shot), cached the same way."""
    path = cache_dir() / "imbalance" / "embeddings" / model_key(model) / f"{data.fingerprint}.npy"
    return _cached(path, lambda: np.asarray(model.encode_images(data.images), dtype=np.float32))
