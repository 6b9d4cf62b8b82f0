"""Sentence encoders (offline asset or hub id) and embeddings with an on-disk cache.

>>> encoder = load_sentence_encoder("all-MiniLM-L6-v2")      # offline asset (smoke, local)
>>> encoder = load_sentence_encoder("sentence-transformers/all-mpnet-base-v2")  # hub id (full)
>>> result = embed(texts, encoder, batch_size=32)            # cached under fmbook.core.paths.cache_dir()
>>> result.vectors.shape, result.n_computed, result.texts_per_s

The cache is one SQLite file per encoder, keyed by the SHA-256 of each text; the encoder's key
(:attr:`SentenceEncoder.cache_key`) covers its identity (asset checksum, hub id and revision, or the
weights of a local folder), the maximum sequence length and whether vectors are L2-normalised. So
re-embedding the same texts with the same encoder costs a lookup, and changing anything that
determines the vectors changes the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fmbook.core import assets
from fmbook.core.paths import cache_dir

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class EncoderError(ValueError):
    """Unknown encoder name, or a bad argument to :func:`embed`."""


def known_encoders() -> list[str]:
    """Offline text-encoder assets (:mod:`fmbook.core.assets` entries of kind ``text-encoder``)."""
    return sorted(name for name, a in assets.ASSETS.items() if a.kind == "text-encoder")


@dataclass
class SentenceEncoder:
    """A loaded sentence-transformers model and what identifies it."""

    model: Any = field(repr=False)  # sentence_transformers.SentenceTransformer
    model_id: str  # asset name, hub id, or the local folder it was loaded from
    kind: str  # "asset" | "hub" | "folder"
    fingerprint: str  # asset SHA-256, hub revision, or hash of a folder's weight files
    dim: int
    max_seq_length: int

    @property
    def cache_key(self) -> str:
        raw = json.dumps([self.model_id, self.kind, self.fingerprint, self.max_seq_length])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"id": self.model_id, "kind": self.kind, "fingerprint": self.fingerprint[:16],
                "dim": self.dim, "max_seq_length": self.max_seq_length}


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars while loading (in a notebook they would become widgets in the book)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def _offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    weights = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    for path in weights:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()


def load_sentence_encoder(name_or_hub_id: str, device: str = "cpu",
                          max_seq_length: int | None = None) -> SentenceEncoder:
    """Load a sentence encoder: an offline asset name, a hub id (``org/name``) or a local folder.

    An asset is fetched (checksummed) by :func:`fmbook.core.assets.require` and loaded from its folder
    with ``HF_HUB_OFFLINE=1``; a hub id goes to the hub (the ``full`` profile); a folder holding a
    saved sentence-transformers model is loaded as it is. Anything else is refused with the list of
    known names; nothing falls back to another model. ``max_seq_length`` caps the word pieces read
    per text (None keeps the model's own; a smaller value is faster and changes the vectors, so it
    is part of the cache key).
    """
    if not isinstance(name_or_hub_id, str) or not name_or_hub_id:
        raise EncoderError(f"encoder must be a non-empty string, got {name_or_hub_id!r}")
    if max_seq_length is not None:
        if not isinstance(max_seq_length, int) or isinstance(max_seq_length, bool) or max_seq_length < 8:
            raise EncoderError(f"max_seq_length must be None or an int >= 8, got {max_seq_length!r}")
    is_asset = name_or_hub_id in assets.ASSETS
    is_folder = not is_asset and Path(name_or_hub_id).expanduser().is_dir()
    if not (is_asset or is_folder or _HUB_ID.match(name_or_hub_id)):
        raise EncoderError(f"unknown sentence encoder {name_or_hub_id!r}; known offline encoders: "
                           f"{', '.join(known_encoders())}; or give a hub id such as "
                           "'sentence-transformers/all-mpnet-base-v2', or a folder with a saved model")
    from sentence_transformers import SentenceTransformer

    if is_asset:
        asset = assets.get(name_or_hub_id)
        if asset.kind != "text-encoder":
            raise EncoderError(f"asset {name_or_hub_id!r} is a {asset.kind}, not a text encoder; "
                               f"known encoders: {', '.join(known_encoders())}")
        folder = assets.require(name_or_hub_id)
        with _offline(), _quiet():
            model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        kind, fingerprint = "asset", next(iter(asset.sha256.values()))
    elif is_folder:
        folder = Path(name_or_hub_id).expanduser().resolve()
        with _offline(), _quiet():
            model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        kind, fingerprint = "folder", _folder_fingerprint(folder)
    else:  # a hub id (full profile): the one place that reaches the network
        with _quiet():
            model = SentenceTransformer(name_or_hub_id, device=device)
        card = getattr(model, "model_card_data", None)
        revision = getattr(card, "base_model_revision", None) or "unknown-revision"
        kind, fingerprint = "hub", f"{name_or_hub_id}@{revision}"
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
        else model.get_sentence_embedding_dimension()
    return SentenceEncoder(model=model, model_id=name_or_hub_id if kind != "folder" else str(folder),
                           kind=kind, fingerprint=fingerprint, dim=int(dim),
                           max_seq_length=int(model.max_seq_length))


# --------------------------------------------------------------------------------------------------
# Embedding with a cache
# --------------------------------------------------------------------------------------------------

@dataclass
class Embeddings:
    """Vectors for the texts (in order) and what producing them cost."""

    vectors: np.ndarray  # (n, dim) float32, L2-normalised when ``normalized``
    model_id: str
    normalized: bool
    n_computed: int  # texts the encoder ran on in this call
    n_cached: int  # texts found in the cache
    seconds: float  # wall time of the encoder on the computed texts (0 when all were cached)
    threads: int  # torch CPU threads during the computation
    cache_file: Path | None

    @property
    def texts_per_s(self) -> float | None:
        """Throughput of the encoder in this call (None when nothing was computed)."""
        return self.n_computed / self.seconds if self.n_computed and self.seconds > 0 else None


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_file(encoder: SentenceEncoder, normalize: bool = True) -> Path:
    safe = re.sub(r"[^A-Za-z0-9.\-]+", "_", Path(encoder.model_id).name if encoder.kind == "folder"
                  else encoder.model_id)
    return cache_dir() / "embeddings" / f"{safe}-{encoder.cache_key}-{'n' if normalize else 'r'}.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(path), timeout=30)
    con.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")
    return con


def embed(texts: Sequence[str], encoder: SentenceEncoder, batch_size: int = 32, normalize: bool = True,
          use_cache: bool = True, refresh: bool = False) -> Embeddings:
    """Embed ``texts`` (cached per text under :func:`fmbook.core.paths.cache_dir`).

    ``normalize`` L2-normalises the vectors (cosine similarity is then a dot product);
    ``use_cache=False`` computes every text and leaves the cache alone; ``refresh=True`` computes
    every text and (re)writes the cache: a timed run that still fills the cache.
    """
    if isinstance(texts, str):
        raise EncoderError("embed() takes a sequence of texts, not one string")
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise EncoderError("every text must be a str")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise EncoderError(f"batch_size must be a positive int, got {batch_size!r}")
    import torch

    vectors: dict[str, np.ndarray] = {}
    path = cache_file(encoder, normalize) if use_cache else None
    keys = [_text_key(t) for t in texts]
    unique = list(dict.fromkeys(keys))
    if path is not None and path.exists() and not refresh:
        with _connect(path) as con:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                rows = con.execute(f"SELECT key, dim, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})",
                                   chunk).fetchall()
                for key, dim, blob in rows:
                    vectors[key] = np.frombuffer(blob, dtype=np.float32).reshape(dim)
    todo_keys = [k for k in unique if k not in vectors]
    first_text = dict(zip(keys, texts))
    seconds = 0.0
    if todo_keys:
        todo = [first_text[k] for k in todo_keys]
        start = time.perf_counter()
        out = encoder.model.encode(todo, batch_size=batch_size, normalize_embeddings=normalize,
                                   convert_to_numpy=True, show_progress_bar=False)
        seconds = time.perf_counter() - start
        out = np.asarray(out, dtype=np.float32)
        vectors.update(zip(todo_keys, out))
        if path is not None:
            with _connect(path) as con:
                con.executemany("INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)",
                                [(k, int(v.shape[0]), v.astype(np.float32).tobytes())
                                 for k, v in zip(todo_keys, out)])
    matrix = np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, encoder.dim), np.float32)
    return Embeddings(vectors=matrix.astype(np.float32), model_id=encoder.model_id, normalized=normalize,
                      n_computed=len(todo_keys), n_cached=len(unique) - len(todo_keys), seconds=seconds,
                      threads=torch.get_num_threads(), cache_file=path)
