"""fmbook.core.vlm: CLIP's loss, the locked text tower, the temperature, zero-shot, caching, the hub path.

The text tower here is a tiny bag-of-words stand-in (random word vectors, fixed by a hash of the word):
a randomly initialised model is allowed inside unit tests. The images are synthetic bars and boxes.
"""

from __future__ import annotations

import hashlib
import math
import string

import numpy as np
import pytest
import torch

from fmbook.core import vlm
from fmbook.core.datasets import ImageSet

# --------------------------------------------------------------------------- helpers


class BagOfWordsTower(torch.nn.Module):
    """A frozen text tower for tests: mean of per-word vectors drawn from a hash of the word."""

    model_id = "test/bag-of-words"

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.vocab: dict[str, int] = {}
        self.table = torch.nn.Parameter(torch.zeros(0, dim))  # grows as words appear; must never train

    def _row(self, word: str) -> torch.Tensor:
        if word not in self.vocab:
            seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
            vector = torch.randn(1, self.dim, generator=torch.Generator().manual_seed(seed))
            self.table = torch.nn.Parameter(torch.cat([self.table.detach(), vector]))
            self.vocab[word] = len(self.vocab)
        return self.table[self.vocab[word]]

    def encode(self, texts):
        rows = []
        for text in texts:
            words = text.lower().replace(",", " ").replace(".", " ").split()
            rows.append(torch.stack([self._row(w) for w in words]).mean(0))
        out = torch.nn.functional.normalize(torch.stack(rows), dim=-1)
        return out.detach().numpy().astype(np.float32)

    def identity(self) -> str:
        return f"{self.model_id}|dim={self.dim}"


SHAPES = ("bar", "pillar", "box")


def synthetic_shapes(n_per_class: int, seed: int) -> ImageSet:
    """Three separable classes of 28x28 images: a horizontal bar, a vertical bar, a hollow box."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            img = rng.integers(0, 40, (28, 28)).astype(np.uint8)
            a, b = rng.integers(4, 20, size=2)
            if label == 0:
                img[a:a + 4, 3:25] = 255
            elif label == 1:
                img[3:25, b:b + 4] = 255
            else:
                img[a:a + 8, b:b + 8] = 255
                img[a + 2:a + 6, b + 2:b + 6] = 0
            images.append(img)
            labels.append(label)
    return ImageSet(f"shapes|n={n_per_class},seed={seed}", np.stack(images), np.array(labels), SHAPES)


def tiny_config(**changes) -> vlm.LiTConfig:
    base = dict(width=4, epochs=4, batch_size=32, lr=1e-2, templates=vlm.TRAIN_TEMPLATES[:3])
    base.update(changes)
    return vlm.LiTConfig(**base)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- the loss


def test_clip_loss_equals_a_direct_computation_and_is_symmetric():
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 5, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(3, 5, generator=gen), dim=-1)
    scale = torch.tensor(math.log(10.0))
    sims = [[10.0 * float(img[i] @ txt[j]) for j in range(3)] for i in range(3)]
    i2t = -sum(sims[i][i] - math.log(sum(math.exp(s) for s in sims[i])) for i in range(3)) / 3
    t2i = -sum(sims[j][j] - math.log(sum(math.exp(sims[i][j]) for i in range(3))) for j in range(3)) / 3
    assert float(vlm.clip_loss(img, txt, scale)) == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    assert float(vlm.clip_loss(img, txt, scale)) == pytest.approx(float(vlm.clip_loss(txt, img, scale)), rel=1e-6)
    # perfectly matched, well separated pairs give a loss near zero
    eye = torch.eye(3)
    assert float(vlm.clip_loss(eye, eye, torch.tensor(math.log(100.0)))) < 1e-6
    with pytest.raises(vlm.VLMError):
        vlm.clip_loss(img, txt[:2], scale)


def test_gradient_reaches_the_image_side_only():
    gen = torch.Generator().manual_seed(1)
    img = torch.randn(4, 6, generator=gen, requires_grad=True)
    txt = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=-1)
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    vlm.clip_loss(torch.nn.functional.normalize(img, dim=-1), txt, scale).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0 and scale.grad is not None
    assert txt.grad is None


def test_training_changes_the_image_tower_and_never_the_text_tower(cache):
    text = BagOfWordsTower()
    data = synthetic_shapes(16, seed=0)
    config = tiny_config(epochs=1)
    with vlm.vision.deterministic(config.seed):
        before = vlm.LiTImageTower(config.width, text.dim, config.init_temperature)
    text.encode([c for row in vlm.captions(SHAPES, config.templates) for c in row])  # build the vocabulary
    table = text.table.detach().clone()
    model = vlm.train_lit(data, config, text, use_cache=False)
    assert torch.equal(text.table.detach(), table) and text.table.grad is None
    changed = [n for n, p in model.tower.state_dict().items()
               if p.dtype.is_floating_point and not torch.equal(p, before.state_dict()[n])]
    assert "proj.weight" in changed and any(n.startswith("encoder.") for n in changed)


def test_temperature_is_learnable_and_clamped(cache):
    tower = vlm.LiTImageTower(4, 16, 0.07)
    assert isinstance(tower.logit_scale, torch.nn.Parameter) and tower.logit_scale.requires_grad
    assert float(tower.logit_scale.detach().exp()) == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        tower.logit_scale.fill_(10.0)
    vlm.clamp_logit_scale_(tower)
    assert tower.logit_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        tower.logit_scale.fill_(-3.0)
    vlm.clamp_logit_scale_(tower)
    assert tower.logit_scale.item() == 0.0
    # in training the temperature moves, and stays within CLIP's bounds even at a large learning rate
    model = vlm.train_lit(synthetic_shapes(16, 0), tiny_config(epochs=2, lr=0.5), BagOfWordsTower(),
                          use_cache=False)
    temps = model.history["temperature"]
    assert all(0.01 - 1e-6 <= t <= 1.0 for t in temps)
    assert temps[-1] != pytest.approx(0.07, abs=1e-6)


# --------------------------------------------------------------------------- zero-shot


class _OneHotVLM(vlm.VisionLanguageModel):
    """Images are encoded by their brightest row band; texts by the class word they contain."""

    name = "test/one-hot"

    def encode_images(self, images, batch_size=512):
        bands = images.reshape(len(images), 3, -1).mean(-1)
        return vlm._normalize(np.eye(3, dtype=np.float32)[bands.argmax(1)] + 0.01)

    def encode_texts(self, texts):
        return vlm._normalize(np.stack([np.eye(3, dtype=np.float32)[[w in t for w in ("top", "middle", "bottom")].index(True)]
                                        for t in texts]) + 0.01)

    @property
    def logit_scale(self):
        return 100.0


def test_zero_shot_with_prompt_ensembling_on_a_separable_case_is_perfect():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    images = np.zeros((30, 27, 5), np.uint8)
    for i, label in enumerate(labels):
        images[i, 9 * label:9 * label + 9] = 200
    result = vlm.zero_shot_classify(_OneHotVLM(), images, ["top", "middle", "bottom"], vlm.HELDOUT_TEMPLATES)
    assert result.accuracy(labels) == 1.0
    assert result.logits.shape == (30, 3) and result.class_vectors.shape == (3, 3)
    assert result.prompts[0] == [vlm.fill(t, "top") for t in vlm.HELDOUT_TEMPLATES]
    assert np.allclose(np.linalg.norm(result.class_vectors, axis=1), 1.0)


def test_trained_model_zero_shot_on_separable_shapes_is_perfect(cache):
    model = vlm.train_lit(synthetic_shapes(64, 0), tiny_config(epochs=8), BagOfWordsTower(), use_cache=False)
    test = synthetic_shapes(20, 1)
    for templates in (vlm.CLASS_NAME_TEMPLATES, vlm.TRAIN_TEMPLATES[:3]):
        assert vlm.zero_shot_classify(model, test.images, SHAPES, templates).accuracy(test.labels) == 1.0
    order, sims = vlm.retrieve(model, "a photo of a box.", test.images, k=5)
    assert (test.labels[order] == 2).all() and np.all(np.diff(sims) <= 0)


def test_fill_and_captions():
    assert vlm.fill("a photo of a {c}.", "Ankle boot") == "a photo of an ankle boot."
    assert vlm.fill("{c}", "T-shirt/top") == "t-shirt or top"
    assert set(vlm.TRAIN_TEMPLATES).isdisjoint(vlm.HELDOUT_TEMPLATES)
    with pytest.raises(vlm.VLMError, match="placeholder"):
        vlm.captions(["x"], ["no slot"])


# --------------------------------------------------------------------------- reproducibility, cache


def test_training_is_bit_for_bit_reproducible(cache):
    data, config = synthetic_shapes(16, 0), tiny_config(epochs=2)
    a = vlm.train_lit(data, config, BagOfWordsTower(), use_cache=False)
    b = vlm.train_lit(data, config, BagOfWordsTower(), use_cache=False)
    sa, sb = a.tower.state_dict(), b.tower.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history == b.history
    c = vlm.train_lit(data, tiny_config(epochs=2, seed=1), BagOfWordsTower(), use_cache=False)
    assert not torch.equal(c.tower.state_dict()["proj.weight"], sa["proj.weight"])


def test_second_call_loads_from_the_cache_instead_of_training(cache, monkeypatch):
    data, config = synthetic_shapes(16, 0), tiny_config(epochs=1)
    first = vlm.train_lit(data, config, BagOfWordsTower())
    assert not first.from_cache and (cache / "vlm" / first.key / "meta.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading from the cache")

    monkeypatch.setattr(vlm, "clip_loss", no_training)
    second = vlm.train_lit(data, config, BagOfWordsTower())
    assert second.from_cache and second.key == first.key and second.history == first.history
    assert np.array_equal(first.encode_images(data.images), second.encode_images(data.images))
    # anything that determines the weights changes the key
    other = vlm.lit_cache_key(tiny_config(epochs=2), data, None, BagOfWordsTower(), np.zeros((1, 16)))
    assert other != vlm.lit_cache_key(config, data, None, BagOfWordsTower(), np.zeros((1, 16)))


# --------------------------------------------------------------------------- names and the hub path


def test_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(vlm.VLMError) as err:
        vlm.load_vlm("clip-on-a-stick")
    assert vlm.OFFLINE_NAME in str(err.value) and "hub id" in str(err.value)
    with pytest.raises(vlm.VLMError):
        vlm.load_vlm("")
    with pytest.raises(vlm.VLMError, match="offline model"):
        vlm.load_vlm("openai/clip-vit-base-patch32", config=vlm.LiTConfig())


def test_config_is_validated():
    with pytest.raises(vlm.VLMError):
        vlm.LiTConfig(batch_size=1)
    with pytest.raises(vlm.VLMError):
        vlm.LiTConfig(init_temperature=0.0)


def _tiny_clip_folder(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + ".,-'/":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_hub_path_loads_a_clip_model_and_processor_with_the_same_interface(tmp_path):
    folder = _tiny_clip_folder(tmp_path / "tiny-clip")
    model = vlm.load_vlm(str(folder))
    assert isinstance(model, vlm.HubCLIP) and isinstance(model, vlm.VisionLanguageModel)
    images = synthetic_shapes(2, 0).images
    emb = model.encode_images(images)
    assert emb.shape == (6, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    texts = model.encode_texts(["a photo of a box.", "bar"])
    assert texts.shape == (2, 16) and np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert model.logit_scale == pytest.approx(model.model.logit_scale.exp().item())
    result = vlm.zero_shot_classify(model, images, SHAPES, vlm.TRAIN_TEMPLATES[:2])
    assert result.predictions.shape == (6,) and result.logits.shape == (6, 3)
    # the same numbers as calling CLIPModel directly
    inputs = model.processor(text=["bar"], images=[np.repeat(images[0][..., None], 3, -1)], return_tensors="pt",
                             padding=True)
    with torch.no_grad():
        out = model.model(**inputs)
    direct = float(out.logits_per_image[0, 0])
    ours = model.logit_scale * float(model.encode_images(images[:1])[0] @ model.encode_texts(["bar"])[0])
    assert ours == pytest.approx(direct, rel=1e-4)
