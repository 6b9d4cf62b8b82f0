"""The book's models and data, described and measured: the appendix chapter ``models_and_data``.

Registry facts come from :mod:`fmbook.core.assets`; everything else is measured on the machine that runs
the notebook: the size on disk, the load time from a *cold* start and from the cache, a sample output,
and throughputs. What "cold" means differs by asset and is said in each result:

* Fashion-MNIST: decoding the gzipped idx files (the first load after fetching) versus reading the
  decoded ``.npz`` that the first load leaves in the cache. The cold load runs against a temporary
  cache folder that links to the fetched asset, so the shared cache is never touched.
* a sentence encoder: a fresh Python process that imports torch and sentence-transformers and loads
  the model, versus loading it again in a process that has already done so.
* a causal LM: the one-time dequantizing GGUF load (recorded in ``CONVERSION.json`` when
  :func:`fmbook.core.lm.convert_gguf` made the cached safetensors copy, or re-measured on request) versus
  loading that cached copy.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fmbook.core import assets

GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
GEMMA_PROHIBITED_USE_URL = "https://ai.google.dev/gemma/prohibited_use_policy"


def folder_mb(path: Path) -> float:
    """Size of the files under ``path`` in MB (10^6 bytes)."""
    path = Path(path)
    if not path.exists():
        return 0.0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def asset_table() -> list[dict[str, Any]]:
    """One row per offline asset: what it is, where from, licence, sizes, when and how fast fetched."""
    rows = []
    for name, asset in assets.ASSETS.items():
        manifest_path = asset.path() / "MANIFEST.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        rows.append({
            "asset": name, "kind": asset.kind, "what": asset.description, "source": asset.source,
            "licence": asset.licence, "registry_mb": asset.size_mb,
            "on_disk_mb": round(folder_mb(asset.path()), 1) if manifest else None,
            "fetched_at": manifest.get("fetched_at"), "fetch_s": manifest.get("fetch_seconds"),
            "sha256": ", ".join(f"{f}: {s[:12]}…" for f, s in asset.sha256.items()),
        })
    return rows


@contextmanager
def _scratch_cache(asset_names: Sequence[str]) -> Iterator[Path]:
    """A temporary ``FMBOOK_CACHE`` whose ``assets/<name>`` link to the real fetched assets."""
    real = {name: assets.require(name) for name in asset_names}
    saved = os.environ.get("FMBOOK_CACHE")
    with tempfile.TemporaryDirectory(prefix="fmbook-cold-") as tmp:
        (Path(tmp) / "assets").mkdir()
        for name, folder in real.items():
            (Path(tmp) / "assets" / name).symlink_to(folder, target_is_directory=True)
        os.environ["FMBOOK_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if saved is None:
                os.environ.pop("FMBOOK_CACHE", None)
            else:
                os.environ["FMBOOK_CACHE"] = saved


_FASHION_SCRIPT = """
import json, time
from fmbook.core.datasets import load_fashion_mnist
t0 = time.perf_counter()
train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
print("FMBOOK-TIMES" + json.dumps({"s": time.perf_counter() - t0, "n_train": len(train), "n_test": len(test)}))
"""


def _timed_subprocess(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` in a fresh Python process; return the JSON it prints after ``FMBOOK-TIMES``."""
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    line = next((l for l in result.stdout.splitlines() if l.startswith("FMBOOK-TIMES")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"timing run failed:\n{result.stderr[-2000:]}")
    return json.loads(line.removeprefix("FMBOOK-TIMES"))


def time_fashion_mnist_load() -> dict[str, Any]:
    """Seconds to load both splits cold (idx decoding) and from the decoded cache, each in a fresh
    process (the library keeps loaded splits in memory, which would hide the second cost)."""
    assets.require("fashion-mnist")
    with _scratch_cache(["fashion-mnist"]) as scratch:
        cold = _timed_subprocess(_FASHION_SCRIPT, env={"FMBOOK_CACHE": str(scratch)})
    _timed_subprocess(_FASHION_SCRIPT)  # the real cache holds the decoded copy from here on
    cached = _timed_subprocess(_FASHION_SCRIPT)
    return {"asset": "fashion-mnist", "cold_s": cold["s"], "cached_s": cached["s"],
            "cold_means": "decode the gzipped idx files", "cached_means": "read the decoded .npz",
            "n_train": cached["n_train"], "n_test": cached["n_test"]}


_COLD_ENCODER_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import torch, sentence_transformers
from fmbook.core.text_encoder import load_sentence_encoder
t1 = time.perf_counter()
load_sentence_encoder(sys.argv[1])
t2 = time.perf_counter()
print("FMBOOK-TIMES" + json.dumps({"import_s": t1 - t0, "load_s": t2 - t1}))
"""


def time_sentence_encoder_load(name: str = "all-MiniLM-L6-v2") -> tuple[Any, dict[str, Any]]:
    """Load a sentence encoder in a fresh process (cold) and then here (cached); return it and times."""
    from fmbook.core.text_encoder import load_sentence_encoder

    cold = _timed_subprocess(_COLD_ENCODER_SCRIPT, name)
    load_sentence_encoder(name)  # imports done, files read once in this process
    start = time.perf_counter()
    encoder = load_sentence_encoder(name)
    cached = time.perf_counter() - start
    return encoder, {"asset": name, "cold_s": cold["import_s"] + cold["load_s"],
                     "cold_import_s": cold["import_s"], "cold_load_s": cold["load_s"], "cached_s": cached,
                     "cold_means": "fresh process: import torch + sentence-transformers, load",
                     "cached_means": "load again in a process that has loaded it before"}


def conversion_record(name: str) -> dict[str, Any] | None:
    """``CONVERSION.json`` of a causal-LM asset's cached safetensors copy (converting it first if needed)."""
    from fmbook.core.lm import convert_gguf

    path = convert_gguf(name, verbose=False) / "CONVERSION.json"  # returns at once when converted
    return json.loads(path.read_text()) if path.is_file() else None


def time_gguf_load(name: str) -> float:
    """Re-measure the dequantizing GGUF load of a causal-LM asset (minutes on 2 cores)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = assets.require(name)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf", dtype=torch.float32)
    seconds = time.perf_counter() - start
    del model
    return seconds


def lm_load_times(lm_model: Any, remeasure_cold: bool = False) -> dict[str, Any]:
    """Cold (GGUF) and cached (safetensors copy) load times of a loaded :class:`fmbook.core.lm.CausalLM`."""
    record = conversion_record(lm_model.name) or {}
    if remeasure_cold:
        cold, when = time_gguf_load(lm_model.name), "measured now"
    else:
        cold, when = record.get("gguf_load_seconds"), f"recorded at conversion, {record.get('converted_at', '?')}"
    return {"asset": lm_model.name, "cold_s": cold, "cached_s": lm_model.load_seconds,
            "cold_means": f"dequantizing GGUF load ({when})",
            "cached_means": "load the cached safetensors copy", "conversion_total_s": record.get("total_seconds")}


def gemma_terms() -> dict[str, Any]:
    """Where the Gemma Terms of Use are (the copy shipped with the asset and the URL) and their opening."""
    folder = assets.require("gemma-3-270m-gguf")
    path = folder / "GEMMA_TERMS.html"
    raw = re.sub(r"(?s)<(script|style)[^>]*>.*?</\1>", "", path.read_text(errors="replace"))
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", raw)))
    start = text.find("Gemma Terms of Use Last modified")
    body = text[start:] if start >= 0 else text
    modified = re.search(r"Last modified: ([A-Za-z]+ \d+, \d{4})", body)
    opening = body[body.find("By using"):] if "By using" in body else body
    # "file" names the copy inside the asset (never the reader's cache path, which "path" holds)
    return {"file": f"{path.name} in the asset gemma-3-270m-gguf", "path": str(path), "url": GEMMA_TERMS_URL, "prohibited_use_url": GEMMA_PROHIBITED_USE_URL,
            "last_modified": modified.group(1) if modified else None,
            "opening": opening[:700].rsplit(" ", 1)[0] + " …",
            "notice": (folder / "NOTICE.md").read_text() if (folder / "NOTICE.md").is_file() else ""}


# --------------------------------------------------------------------------- sample outputs

PARAPHRASE_EXAMPLE = (
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The quarterly tax report is due next Tuesday.",
)


def paraphrase_ranking(encoder: Any, sentences: Sequence[str] = PARAPHRASE_EXAMPLE) -> list[dict[str, Any]]:
    """Cosine similarity of the first sentence to each of the others, best first."""
    from fmbook.core.text_encoder import embed

    vectors = embed(list(sentences), encoder, normalize=True).vectors
    rows = [{"sentence": s, "cosine": float(vectors[0] @ v)} for s, v in zip(sentences[1:], vectors[1:])]
    return sorted(rows, key=lambda r: -r["cosine"])


def throughput_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct short sentences to time an encoder on (generated from word lists, seeded)."""
    rng = np.random.default_rng(seed)
    subjects = ["The cat", "A student", "My neighbour", "The old train", "A small robot", "The committee"]
    verbs = ["reads", "paints", "repairs", "describes", "ignores", "measures", "visits", "builds"]
    objects = ["a red bicycle", "the quiet library", "an unusual theorem", "the morning news",
               "a wooden boat", "the city map", "a long letter", "the summer garden"]
    out = []
    for i in range(n):
        s, v, o = rng.choice(subjects), rng.choice(verbs), rng.choice(objects)
        out.append(f"{s} {v} {o} (example {i}).")
    return out


def embedding_throughput(encoder: Any, n: int = 256, batch_size: int = 32, seed: int = 0,
                         threads: int | None = 1) -> dict[str, Any]:
    """Sentences per second of a sentence encoder (computed, not read from the embedding cache).

    ``threads`` torch CPU threads during the measurement (None: leave as is). One thread by default:
    the number is then comparable across machines and is not spoiled by other processes competing
    for the cores, as extra threads are on a busy machine.
    """
    import torch

    from fmbook.core.text_encoder import embed

    texts = throughput_sentences(n, seed)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        embed(texts[:batch_size], encoder, batch_size=batch_size, use_cache=False)  # warm-up
        result = embed(texts, encoder, batch_size=batch_size, use_cache=False)
    finally:
        torch.set_num_threads(previous)
    return {"n": n, "batch_size": batch_size, "seconds": result.seconds, "texts_per_s": result.texts_per_s,
            "threads": result.threads}


def image_encoder_throughput(encoder: Any, images: np.ndarray, batch_size: int = 1024) -> dict[str, Any]:
    """Images per second of a frozen image encoder (:func:`fmbook.core.vision.extract_features`, 1 thread)."""
    from fmbook.core.vision import extract_features

    extract_features(encoder, images[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    extract_features(encoder, images, batch_size)
    seconds = time.perf_counter() - start
    return {"n": len(images), "seconds": seconds, "images_per_s": len(images) / seconds, "threads": 1}


def plot_class_grid(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], per_class: int = 8,
                    seed: int = 0, title: str = ""):
    """A grid with one row per class and ``per_class`` random examples of it (seeded)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.75 + 1.2, len(classes) * 0.78))
    axes = np.atleast_2d(axes)
    for row, name in enumerate(classes):
        members = np.flatnonzero(labels == row)
        picks = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(picks):
                ax.imshow(images[picks[col]], cmap="gray_r" if images.ndim == 3 else None, vmin=0, vmax=255)
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    if title:
        fig.suptitle(title, y=0.995)
    fig.subplots_adjust(wspace=0.05, hspace=0.08, top=1 - 0.45 / fig.get_figheight() if title else 0.99,
                        bottom=0.01)
    return fig


def plot_images(images: np.ndarray, captions: Sequence[str], title: str = "", cols: int | None = None):
    """A row (or grid) of images with a small caption under each."""
    import matplotlib.pyplot as plt

    cols = cols or len(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.35 + 0.3))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, cap in zip(axes, images, captions):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(cap, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
