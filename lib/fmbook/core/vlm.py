"""A small vision-language model the book trains itself, and CLIP from the hub, behind one interface.

No CLIP-like model installs offline, so the book makes one (``"fmbook/lit-fashion-minilm"``):

* **text tower**: the *frozen* all-MiniLM-L6-v2 sentence encoder (offline asset, 384-d, L2-normalised);
* **image tower**: :class:`fmbook.core.vision.TinyResNet` (trained from scratch) and a linear projection
  into the text tower's 384-d space, L2-normalised;
* **objective**: CLIP's symmetric InfoNCE loss (Radford et al., 2021) with a learnable temperature,
  stored as ``logit_scale = log(1/T)``, initialised at ``1/T = 1/0.07`` and clamped to ``[0, log 100]``
  after every step as in CLIP. Only the image side learns: this is locked-tower tuning (LiT, Zhai et
  al., 2022) with the roles of the towers swapped, the *text* tower locked. Because the text tower is
  a general sentence encoder that was never tuned here, the model can be asked about captions it never
  saw in training (:data:`HELDOUT_TEMPLATES`).
* **data**: Fashion-MNIST images with captions generated from their labels: every image gets, each
  epoch, one of the :data:`TRAIN_TEMPLATES` (drawn with the seed) filled with its class phrase
  (:func:`class_phrase`).

:func:`train_lit` trains bit-for-bit reproducibly on CPU (one thread, deterministic algorithms,
seeded order) and caches under ``cache_dir()/vlm/<key>``, where the key hashes the config, the
training and evaluation data, the text tower's identity and its caption vectors, the code of this
module and of :mod:`fmbook.core.vision`, and the torch version. :func:`load_vlm` takes the offline name
(trains or loads ours) or a hub id / folder (``openai/clip-vit-base-patch32``), which goes through
``transformers.CLIPModel`` and ``CLIPProcessor``. Both give :class:`VisionLanguageModel`:
``encode_images``, ``encode_texts``, ``logit_scale``, and :func:`zero_shot_classify` with CLIP's
prompt ensembling works on either.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmbook.core import vision
from fmbook.core.datasets import ImageSet, fingerprint_arrays
from fmbook.core.paths import atomic_folder, cache_dir
from fmbook.core.progress import logger

OFFLINE_NAME = "fmbook/lit-fashion-minilm"
OFFLINE_VLMS = (OFFLINE_NAME,)
MAX_LOGIT_SCALE = float(np.log(100.0))  # CLIP clamps 1/T at 100

#: Caption templates used in training (one is drawn per image and epoch). ``{c}`` is the class phrase.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c}.",
    "a grey picture of a {c}.",
    "a {c}, seen from the front.",
    "a low-resolution photo of a {c}.",
    "a black and white photo of the {c}.",
    "a small image of a {c}.",
    "a product photo of a {c} for an online shop.",
    "a centred photo of one {c} on a dark background.",
)
#: Templates never used in training: zero-shot on captions the model never saw.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "an image showing a {c}.",
    "a blurry snapshot of a {c}.",
    "this is a {c}.",
    "a catalogue picture of a {c}, in greyscale.",
)
#: The bare class phrase: the simplest zero-shot prompt (also never seen in training).
CLASS_NAME_TEMPLATES: tuple[str, ...] = ("{c}",)


class VLMError(ValueError):
    """An unknown model name or a bad argument (the message lists what is allowed)."""


def code_version() -> str:
    """Hash of this module, of :mod:`fmbook.core.vision` (the image encoder) and the torch version."""
    return hashlib.sha256(Path(__file__).read_bytes() + vision.code_version().encode()
                          + torch.__version__.encode()).hexdigest()[:12]


def class_phrase(class_name: str) -> str:
    """How a class name reads inside a caption: lower case, ``/`` read as "or" (``t-shirt or top``)."""
    return class_name.lower().replace("/", " or ")


def fill(template: str, class_name: str) -> str:
    """``template`` with ``{c}`` replaced by :func:`class_phrase`; "a" becomes "an" before a vowel."""
    phrase = class_phrase(class_name)
    text = template.replace("{c}", phrase)
    if phrase[:1] in "aeiou":
        text = text.replace(f"a {phrase}", f"an {phrase}")
        if text.startswith(f"A {phrase}"):
            text = "An" + text[1:]
    return text


def captions(class_names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """``captions[c][k]``: template ``k`` filled with class ``c``."""
    if not templates:
        raise VLMError("at least one template is needed")
    bad = [t for t in templates if "{c}" not in t]
    if bad:
        raise VLMError(f"every template needs a '{{c}}' placeholder; these have none: {bad}")
    return [[fill(t, c) for t in templates] for c in class_names]


# --------------------------------------------------------------------------- the loss

def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: mean of image->text and text->image cross-entropy.

    ``image_emb`` and ``text_emb`` are ``(N, d)`` L2-normalised, row ``i`` of each a matching pair;
    ``logits = exp(logit_scale) * image_emb @ text_emb.T``; the target of row ``i`` is column ``i``.
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise VLMError(f"image and text embeddings must both be (N, d); got {tuple(image_emb.shape)} "
                       f"and {tuple(text_emb.shape)}")
    logits = logit_scale.exp() * image_emb @ text_emb.t()
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


# --------------------------------------------------------------------------- the common interface

class TextTower(Protocol):
    """A frozen text encoder: ``encode`` returns L2-normalised float32 ``(n, dim)`` vectors."""

    model_id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def identity(self) -> str: ...


class SentenceTextTower:
    """A :class:`fmbook.core.text_encoder.SentenceEncoder` as a frozen text tower (embeddings cached)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.dim = int(encoder.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from fmbook.core.text_encoder import embed

        return embed(list(texts), self.encoder, normalize=True).vectors

    def identity(self) -> str:
        return f"{self.model_id}|{self.encoder.cache_key}"


def load_text_tower(name_or_hub_id: str = "all-MiniLM-L6-v2") -> SentenceTextTower:
    """The frozen text tower: an offline sentence-encoder asset or a hub id (sentence-transformers)."""
    from fmbook.core.text_encoder import load_sentence_encoder

    return SentenceTextTower(load_sentence_encoder(name_or_hub_id))


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class VisionLanguageModel:
    """What every VLM of the book offers (ours and CLIP): normalised embeddings and a scale."""

    name: str = ""

    def encode_images(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """uint8 ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB -> L2-normalised ``(N, d)`` float32."""
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> L2-normalised ``(n, d)`` float32."""
        raise NotImplementedError

    @property
    def logit_scale(self) -> float:
        """``1/T``: similarities are multiplied by it before a softmax."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"id": self.name}


# --------------------------------------------------------------------------- ours: LiT on Fashion-MNIST

class LiTImageTower(nn.Module):
    """TinyResNet -> linear projection (no bias) -> L2-normalised embedding; and the logit scale."""

    def __init__(self, width: int, dim: int, init_temperature: float) -> None:
        super().__init__()
        self.encoder = vision.load_image_encoder("tiny-resnet", width)
        self.proj = nn.Linear(self.encoder.feature_dim, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / init_temperature))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.encoder(x)), dim=-1)


@dataclass(frozen=True)
class LiTConfig:
    """Contrastive training of the image tower against a frozen text tower (CLIP's loss, LiT's lock).

    CLIP trains with AdamW, a cosine learning-rate schedule, decoupled weight decay (not on the
    temperature), and a learnable temperature initialised at 0.07 and capped at 1/100; the same here
    at small scale. ``train_per_class`` / ``eval_per_class`` are used by :func:`load_vlm` to draw
    Fashion-MNIST subsets (seeded by ``data_seed``); :func:`train_lit` takes any data.
    """

    text_encoder: str = "all-MiniLM-L6-v2"  # the frozen text tower (asset name or hub id)
    width: int = 16  # TinyResNet width (image features: 4 * width)
    epochs: int = 6
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    init_temperature: float = 0.07
    hflip: bool = True
    templates: tuple[str, ...] = TRAIN_TEMPLATES
    train_per_class: int = 2000  # Fashion-MNIST training images per class (load_vlm)
    eval_per_class: int = 100  # Fashion-MNIST test images per class for the per-epoch curve (load_vlm)
    data_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "epochs", "batch_size", "train_per_class", "eval_per_class"):
            if getattr(self, name) < 1:
                raise VLMError(f"LiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise VLMError("LiTConfig.batch_size must be >= 2 (a contrastive batch needs negatives)")
        if self.lr <= 0 or not 0 < self.init_temperature <= 1:
            raise VLMError(f"LiTConfig needs lr > 0 and 0 < init_temperature <= 1; got lr={self.lr}, "
                           f"init_temperature={self.init_temperature}")
        object.__setattr__(self, "templates", tuple(self.templates))
        captions(["x"], self.templates)  # validates the placeholders


@dataclass
class LiTModel(VisionLanguageModel):
    """Our trained VLM: the image tower, the frozen text tower, and how it was trained."""

    tower: LiTImageTower
    text: TextTower
    config: LiTConfig
    classes: tuple[str, ...]
    key: str
    history: dict[str, list[float]]
    seconds: float
    from_cache: bool
    info: dict = field(default_factory=dict)
    name: str = OFFLINE_NAME

    def encode_images(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        self.tower.eval()
        chunks = []
        with torch.no_grad(), vision.deterministic(0):
            for start in range(0, len(images), batch_size):
                chunks.append(self.tower(vision.images_to_tensor(images[start:start + batch_size])))
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.text.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _normalize(self.text.encode(list(texts)))

    @property
    def logit_scale(self) -> float:
        return float(self.tower.logit_scale.detach().exp())

    @property
    def temperature(self) -> float:
        return 1.0 / self.logit_scale

    def describe(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.tower.parameters())
        return {"id": self.name, "key": self.key, "text_tower": self.text.model_id,
                "image_tower": f"tiny-resnet(width={self.config.width}) + linear projection",
                "trainable_parameters": n_params, "from_cache": self.from_cache,
                "train_seconds": round(self.seconds, 1), **{k: v for k, v in self.info.items()
                                                            if k in ("train", "n_train", "code")}}


def lit_cache_key(config: LiTConfig, train: ImageSet, eval_set: ImageSet | None, text: TextTower,
                  caption_vectors: np.ndarray) -> str:
    """Hash of everything that determines the trained weights."""
    payload = {
        "config": asdict(config),
        "train": train.fingerprint,
        "classes": list(train.classes),
        "eval": eval_set.fingerprint if eval_set is not None else None,
        "text_tower": text.identity(),
        "caption_vectors": fingerprint_arrays(np.ascontiguousarray(caption_vectors, dtype=np.float32)),
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def clamp_logit_scale_(tower: LiTImageTower) -> None:
    """CLIP's clamp: ``0 <= logit_scale <= log(100)`` (temperature between 0.01 and 1)."""
    with torch.no_grad():
        tower.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)


def _zero_shot_acc(tower: LiTImageTower, images: torch.Tensor, labels: torch.Tensor,
                   class_vectors: torch.Tensor, batch_size: int = 1024) -> float:
    tower.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            sims = tower(images[start:start + batch_size]) @ class_vectors.t()
            correct += int((sims.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def train_lit(train: ImageSet, config: LiTConfig, text: TextTower, eval_set: ImageSet | None = None,
              use_cache: bool = True, device: str = "cpu", verbose: bool = False) -> LiTModel:
    """Train the image tower contrastively against the frozen ``text`` tower on captioned ``train``.

    Each epoch the images are shuffled and cut into full batches of ``config.batch_size`` (the
    remainder is left out of that epoch; with fewer images than a batch, one batch of all of them);
    every image is paired with one of ``config.templates`` (drawn with the seed) filled with its class
    phrase; the caption vectors are computed once by the frozen text tower. History:
    ``step_loss`` (every step), and per epoch ``train_loss``, ``temperature`` and ``eval_acc`` (zero-shot
    accuracy on ``eval_set`` with the bare class names as prompts; None without one). Cached under
    ``cache_dir()/vlm/<key>`` (:func:`lit_cache_key`).
    """
    if len(train) < 2:
        raise VLMError("training needs at least 2 images")
    table = captions(train.classes, config.templates)
    flat = [t for row in table for t in row]
    caption_vectors = _normalize(text.encode(flat)).reshape(train.num_classes, len(config.templates), -1)
    name_vectors = _normalize(text.encode([fill("{c}", c) for c in train.classes]))
    key = lit_cache_key(config, train, eval_set, text, np.concatenate([caption_vectors.reshape(-1, text.dim),
                                                                       name_vectors]))
    folder = cache_dir() / "vlm" / key
    if use_cache and (folder / "meta.json").is_file():
        return _load_lit(folder, config, text, train.classes, key, device)

    start = time.perf_counter()
    with vision.deterministic(config.seed):
        tower = LiTImageTower(config.width, text.dim, config.init_temperature).to(device)
        decay = [p for n, p in tower.named_parameters() if n != "logit_scale" and p.ndim > 1]
        no_decay = [p for n, p in tower.named_parameters() if n == "logit_scale" or p.ndim <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        # every batch is full (the last incomplete one is dropped, as in CLIP): the loss of a batch
        # depends on how many negatives it holds, so a small last batch would distort the curve
        steps_per_epoch = max(1, len(train) // config.batch_size)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        images = vision.images_to_tensor(train.images).to(device)
        labels = torch.from_numpy(train.labels).to(device)
        text_table = torch.from_numpy(caption_vectors).to(device)
        names = torch.from_numpy(name_vectors).to(device)
        if eval_set is not None:
            eval_images = vision.images_to_tensor(eval_set.images).to(device)
            eval_labels = torch.from_numpy(eval_set.labels).to(device)
        generator = torch.Generator().manual_seed(config.seed)
        history: dict[str, list] = {"epoch": [], "train_loss": [], "temperature": [], "eval_acc": [],
                                           "step_loss": []}
        for epoch in range(config.epochs):
            tower.train()
            order = torch.randperm(len(train), generator=generator)
            flips = torch.rand(len(train), generator=generator) < 0.5
            which = torch.randint(len(config.templates), (len(train),), generator=generator)
            total, seen = 0.0, 0
            for step in range(steps_per_epoch):
                index = order[step * config.batch_size:(step + 1) * config.batch_size]
                x = images[index]
                if config.hflip:
                    x = torch.where(flips[index].view(-1, 1, 1, 1).to(device), x.flip(-1), x)
                t = text_table[labels[index], which[index].to(device)]
                loss = clip_loss(tower(x), t, tower.logit_scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                clamp_logit_scale_(tower)
                history["step_loss"].append(loss.item())
                total += loss.item() * len(index)
                seen += len(index)
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(total / seen)
            history["temperature"].append(float(1.0 / tower.logit_scale.detach().exp()))
            history["eval_acc"].append(_zero_shot_acc(tower, eval_images, eval_labels, names)
                                       if eval_set is not None else None)
            if verbose:
                acc = history["eval_acc"][-1]
                logger.info(f"epoch {epoch + 1}/{config.epochs}: loss {history['train_loss'][-1]:.3f} "
                            f"T {history['temperature'][-1]:.4f}"
                            + (f" zero-shot eval acc {acc:.3f}" if acc is not None else ""))
    tower.eval()
    seconds = time.perf_counter() - start
    info = {"train": train.name, "train_fingerprint": train.fingerprint, "n_train": len(train),
            "eval": eval_set.name if eval_set is not None else None, "text_tower": text.identity(),
            "code": code_version(), "torch": torch.__version__}
    model = LiTModel(tower, text, config, tuple(train.classes), key, history, seconds, False, info)
    if use_cache:
        _save_lit(folder, model)
    return model


def _save_lit(folder: Path, model: LiTModel) -> None:
    with atomic_folder(folder) as staging:
        torch.save(model.tower.state_dict(), staging / "weights.pt")
        meta = {"config": asdict(model.config), "key": model.key, "classes": list(model.classes),
                "history": model.history, "seconds": model.seconds, "info": model.info}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))


def _load_lit(folder: Path, config: LiTConfig, text: TextTower, classes: Sequence[str], key: str,
              device: str) -> LiTModel:
    meta = json.loads((folder / "meta.json").read_text())
    tower = LiTImageTower(config.width, text.dim, config.init_temperature).to(device)
    tower.load_state_dict(torch.load(folder / "weights.pt", map_location=device, weights_only=True))
    tower.eval()
    return LiTModel(tower, text, config, tuple(classes), key, meta["history"], meta["seconds"], True,
                    meta["info"])


def fashion_mnist_splits(config: LiTConfig) -> tuple[ImageSet, ImageSet]:
    """The training subset and the per-epoch evaluation subset that :func:`load_vlm` uses."""
    from fmbook.core.datasets import load_fashion_mnist, stratified_subsample

    train = stratified_subsample(load_fashion_mnist("train"), config.train_per_class, config.data_seed)
    evaluation = stratified_subsample(load_fashion_mnist("test"), config.eval_per_class, config.data_seed)
    return train, evaluation


# --------------------------------------------------------------------------- CLIP from the hub

class HubCLIP(VisionLanguageModel):
    """A ``transformers`` CLIP model and its processor (the ``full`` profile; any saved folder too).

    Grey images are repeated to three channels; the processor resizes and normalises them.
    """

    def __init__(self, model: nn.Module, processor: Any, name: str) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name

    @staticmethod
    def _features(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_images(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = [img for img in images[start:start + batch_size]]
                inputs = self.processor(images=batch, return_tensors="pt")
                feats = self._features(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
                chunks.append(F.normalize(feats.float(), dim=-1))
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.model.config.projection_dim), np.float32)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        texts = list(texts)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                inputs = self.processor(text=texts[start:start + batch_size], return_tensors="pt",
                                        padding=True, truncation=True)
                feats = self._features(self.model.get_text_features(input_ids=inputs["input_ids"],
                                                                    attention_mask=inputs["attention_mask"]))
                chunks.append(F.normalize(feats.float(), dim=-1))
        return torch.cat(chunks).numpy()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def describe(self) -> dict[str, Any]:
        return {"id": self.name, "model_type": self.model.config.model_type,
                "parameters": sum(p.numel() for p in self.model.parameters())}


def load_vlm(name_or_hub_id: str, config: LiTConfig | None = None, text: TextTower | None = None,
             use_cache: bool = True, verbose: bool = False) -> VisionLanguageModel:
    """``"fmbook/lit-fashion-minilm"`` (train ours on Fashion-MNIST, or load it from the cache) or a
    CLIP hub id / local folder (``transformers.CLIPModel`` + ``CLIPProcessor``).

    ``config`` and ``text`` (a preloaded text tower) apply to the offline model only. Anything else is
    refused with the list of known names; nothing falls back to another model.
    """
    if not isinstance(name_or_hub_id, str) or not name_or_hub_id:
        raise VLMError(f"model must be a non-empty string, got {name_or_hub_id!r}")
    if name_or_hub_id in OFFLINE_VLMS:
        config = config or LiTConfig()
        text = text or load_text_tower(config.text_encoder)
        train, evaluation = fashion_mnist_splits(config)
        return train_lit(train, config, text, evaluation, use_cache=use_cache, verbose=verbose)
    if config is not None:
        raise VLMError(f"config applies to the offline model {OFFLINE_NAME!r} only, not {name_or_hub_id!r}")
    if vision.is_hub_reference(name_or_hub_id):
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(name_or_hub_id)
        processor = CLIPProcessor.from_pretrained(name_or_hub_id)
        return HubCLIP(model, processor, name_or_hub_id)
    raise VLMError(f"unknown vision-language model {name_or_hub_id!r}; known offline models: "
                   f"{', '.join(OFFLINE_VLMS)}; or a CLIP hub id such as 'openai/clip-vit-base-patch32', "
                   "or a folder saved with CLIPModel/CLIPProcessor.save_pretrained")


# --------------------------------------------------------------------------- using a VLM

@dataclass
class ZeroShotResult:
    """Zero-shot predictions: ``logits = logit_scale * image @ class_vectors.T``."""

    predictions: np.ndarray  # (N,) int
    logits: np.ndarray  # (N, C)
    class_vectors: np.ndarray  # (C, d), the ensembled prompt embedding of each class
    prompts: list[list[str]]  # prompts[c]: the texts averaged for class c

    def accuracy(self, labels: np.ndarray) -> float:
        labels = np.asarray(labels)
        if labels.shape != self.predictions.shape:
            raise VLMError(f"labels must have shape {self.predictions.shape}, got {labels.shape}")
        return float((self.predictions == labels).mean()) if len(labels) else float("nan")


def class_vectors(model: VisionLanguageModel, class_names: Sequence[str],
                  templates: Sequence[str] = CLASS_NAME_TEMPLATES) -> tuple[np.ndarray, list[list[str]]]:
    """CLIP's prompt ensembling: embed every template filled with the class, L2-normalise each,
    average over templates, L2-normalise the mean. Returns ``(C, d)`` and the prompts."""
    prompts = captions(class_names, templates)
    flat = model.encode_texts([p for row in prompts for p in row])
    vectors = _normalize(flat).reshape(len(class_names), len(templates), -1).mean(axis=1)
    return _normalize(vectors), prompts


def zero_shot_classify(model: VisionLanguageModel, images: np.ndarray, class_names: Sequence[str],
                       templates: Sequence[str] = CLASS_NAME_TEMPLATES,
                       image_embeddings: np.ndarray | None = None) -> ZeroShotResult:
    """Classify ``images`` into ``class_names`` with no training: the class whose (ensembled)
    prompt embedding is most similar to the image's. Pass ``image_embeddings`` to reuse them."""
    if not class_names:
        raise VLMError("class_names is empty")
    vectors, prompts = class_vectors(model, class_names, templates)
    emb = model.encode_images(images) if image_embeddings is None else _normalize(image_embeddings)
    logits = model.logit_scale * emb @ vectors.T
    return ZeroShotResult(logits.argmax(axis=1), logits, vectors, prompts)


def retrieve(model: VisionLanguageModel, query: str, images: np.ndarray | None = None, k: int = 8,
             image_embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Text-to-image retrieval: indices and cosine similarities of the ``k`` best images for ``query``."""
    if image_embeddings is None:
        if images is None:
            raise VLMError("retrieve needs images or image_embeddings")
        image_embeddings = model.encode_images(images)
    sims = _normalize(image_embeddings) @ model.encode_texts([query])[0]
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]
