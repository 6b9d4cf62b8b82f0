"""Causal language models: loading (offline GGUF assets or hub ids), batched greedy generation,
log-likelihood scoring, an on-disk cache of model outputs, and throughput measurement.

Shared by the prompting chapters (EmotionPrompt, arXiv 2307.11760; its follow-up 2312.11111).

Loading an offline asset (:mod:`fmbook.core.assets`) is done once with transformers' GGUF reader
(``from_pretrained(folder, gguf_file="model.gguf")``), which dequantizes every tensor: slow
(about 150 s on 2 cores). The dequantized weights are then copied into a fresh model built
``from_config`` (``save_pretrained`` refuses a GGUF-loaded model), saved as safetensors under
``cache_dir()/converted/<asset>-<sha>/`` after checking that both give identical greedy outputs,
and every later call loads that copy (a few seconds). A hub id or a local model folder goes
straight through ``from_pretrained``; an unknown name is refused with the list of known assets.

Two ways to generate (both greedy, both behind :meth:`CausalLM.generate`):

* the **transformers path** (``prefix_cache=False``): prompts sorted by length, left-padded
  batches, ``model.generate``. It is the reference, and the model object is the one to use for
  anything that needs the internals (hidden states, LoRA, soft prompts);
* the **book's engine** (``prefix_cache=True``, :func:`load_engine`): prompts grouped by their
  shared token prefix (system message, instruction, stimulus, demonstrations), whose keys and
  values are computed once per group and reused by every row; a batch packs several groups (each
  row's cache holds its own group's prefix, left-padded and masked), so that decoding steps run on
  full batches; rows sorted by length inside a group (little padding); a finished row leaves the
  batch at once; weights in bfloat16 where the
  CPU multiplies bfloat16 natively (AVX512-BF16 / AMX) or on a GPU. ``python -m fmbook bench lm``
  measures it against the reference (:mod:`fmbook.core.lm_bench`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from fmbook.core import assets
from fmbook.core.paths import atomic_folder, cache_dir
from fmbook.core.progress import Progress, logger, progress

PREFIX_MEMO = 16  # prefixes whose keys/values the engine keeps between batches
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZE = (None, "int8-dynamic")
_CONVERTED_VERSION = 1  # bump when the conversion recipe changes
log = logging.getLogger(__name__)


class LMError(ValueError):
    """A bad model name or parameter (the message names it and the allowed values)."""


def causal_lm_assets() -> list[str]:
    """Names of the offline causal-LM assets known to :mod:`fmbook.core.assets`."""
    return sorted(n for n, a in assets.ASSETS.items() if a.kind == "causal-lm")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _converted_dir(name: str) -> Path:
    sha = assets.get(name).sha256["model.gguf"][:12]
    return cache_dir() / "converted" / f"{name}-{sha}-v{_CONVERTED_VERSION}"


def _probe_prompts() -> list[str]:
    return ["What is 23 + 58? Answer with the number only.", "The plural of mouse is"]


def _greedy_ids(model, tokenizer, texts: list[str], n: int = 6) -> list[list[int]]:
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=n, do_sample=False)
        out.append(gen[0, ids["input_ids"].shape[1]:].tolist())
    return out


@contextlib.contextmanager
def _gguf_progress_to_log():
    """transformers' GGUF reader draws a ``tqdm.auto`` bar, a widget in a notebook that TQDM_DISABLE
    does not silence; while converting, its loop reports progress lines to the log instead."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # another transformers layout: nothing to redirect
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, desc="GGUF tensors", **_: progress(iterable, desc=desc.rstrip(". "))
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def convert_gguf(name: str, verbose: bool = True) -> Path:
    """Dequantize the GGUF of asset ``name`` once and cache a safetensors copy; return its folder.

    The copy is verified: greedy continuations of two probe prompts must be token-identical to the
    GGUF-loaded model's. Timings are written to ``CONVERSION.json`` in the folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _converted_dir(name)
    if (target / "CONVERSION.json").is_file():
        return target
    folder = assets.require(name)
    start = time.perf_counter()
    if verbose:
        logger.info("converting '%s' from GGUF (one time, a few minutes on 2 cores)", name)
    with _gguf_progress_to_log():
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="model.gguf")
    t_load = time.perf_counter() - start
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"converting '{name}': missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    fresh.generation_config = gguf_model.generation_config
    gguf_model.eval(), fresh.eval()
    reference = _greedy_ids(gguf_model, tokenizer, _probe_prompts())
    copy = _greedy_ids(fresh, tokenizer, _probe_prompts())
    if reference != copy:
        raise RuntimeError(f"converting '{name}': the copy's greedy outputs differ ({reference} vs {copy})")
    with atomic_folder(target, replace=False) as staging:  # another process may finish first
        with _quiet_hf():
            fresh.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        import transformers

        info = {"asset": name, "gguf_sha256": assets.get(name).sha256["model.gguf"],
                "transformers": transformers.__version__, "torch": torch.__version__,
                "gguf_load_seconds": round(t_load, 1),
                "total_seconds": round(time.perf_counter() - start, 1),
                "probe_greedy_ids": reference, "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (staging / "CONVERSION.json").write_text(json.dumps(info, indent=2))
    if verbose:  # the log, not the notebook: the cache path is the reader's own
        logger.info("converted '%s' in %.0f s -> %s", name, time.perf_counter() - start, target)
    return target


class _quiet_hf:
    """No tqdm bars from transformers/huggingface_hub (in a notebook they become widgets)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        self._env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        if self._was:
            hf_logging.enable_progress_bar()
        if self._env is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = self._env
        return False


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16, Linux flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def fast_dtype(device: str = "cpu") -> str:
    """The engine's weight type: bfloat16 on a GPU or a CPU with native bfloat16, else float32."""
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"


def load_engine(name_or_hub_id: str, device: str = "cpu", dtype: str | None = None,
                verbose: bool = True) -> "CausalLM":
    """The book's generation engine: :func:`load_causal_lm` at :func:`fast_dtype` with the
    shared-prefix path on (see the module docstring). ``dtype`` overrides the weight type."""
    lm = load_causal_lm(name_or_hub_id, dtype=dtype or fast_dtype(device), device=device, verbose=verbose)
    lm.prefix_cache = True
    return lm


def _fingerprint_folder(folder: Path) -> str:
    """A short hash of a local model folder's config and weight file sizes/mtimes."""
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*")):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:12]


def load_causal_lm(name_or_hub_id: str, dtype: str = "float32", device: str = "cpu",
                   quantize: str | None = None, verbose: bool = True) -> "CausalLM":
    """Load a causal LM by offline asset name, hub id (``org/name``) or local model folder.

    ``dtype``: one of ``float32 | bfloat16 | float16``; ``quantize``: ``None`` or
    ``"int8-dynamic"`` (PyTorch dynamic int8 quantization of the linear layers, CPU only).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise LMError(f"dtype={dtype!r} is not supported; allowed: {', '.join(DTYPES)}")
    if quantize not in QUANTIZE:
        raise LMError(f"quantize={quantize!r} is not supported; allowed: {QUANTIZE}")
    if quantize and device != "cpu":
        raise LMError(f"quantize={quantize!r} runs on device='cpu' only, got device={device!r}")
    start = time.perf_counter()
    if name_or_hub_id in assets.ASSETS:
        if assets.get(name_or_hub_id).kind != "causal-lm":
            raise LMError(f"asset {name_or_hub_id!r} is a {assets.get(name_or_hub_id).kind}, not a "
                          f"causal LM; causal-LM assets: {', '.join(causal_lm_assets())}")
        folder = convert_gguf(name_or_hub_id, verbose=verbose)
        source = "asset"
        model_id = f"{name_or_hub_id}@{assets.get(name_or_hub_id).sha256['model.gguf'][:12]}"
    elif Path(name_or_hub_id).is_dir():
        folder = Path(name_or_hub_id)
        source = "folder"
        model_id = f"folder:{folder.resolve()}@{_fingerprint_folder(folder)}"
    elif "/" in name_or_hub_id and not name_or_hub_id.startswith(("/", ".")):
        folder = name_or_hub_id
        source = "hub"
        model_id = name_or_hub_id
    else:
        raise LMError(f"unknown model {name_or_hub_id!r}: not an offline asset, a hub id (org/name) "
                      f"or a model folder; known assets: {', '.join(causal_lm_assets())}")
    with _quiet_hf():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype])
        tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if quantize == "int8-dynamic":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    load_seconds = time.perf_counter() - start
    lm = CausalLM(model=model, tokenizer=tokenizer, name=name_or_hub_id, model_id=model_id,
                  source=source, dtype=dtype, device=device, quantize=quantize,
                  load_seconds=load_seconds, n_params=n_params)
    log.info("loaded %s (%.0fM parameters, %s%s) in %.1f s", name_or_hub_id, lm.n_params / 1e6, dtype,
             ", " + quantize if quantize else "", load_seconds)
    return lm


# --------------------------------------------------------------------------------------------
# Output cache
# --------------------------------------------------------------------------------------------

class OutputCache:
    """A small SQLite store of model outputs keyed by (model id, prompt, decoding settings).

    The default location is ``cache_dir()/lm_outputs.sqlite``; ``FMBOOK_LM_CACHE=0`` disables it and
    ``FMBOOK_LM_CACHE=/some/file.sqlite`` uses another file (e.g. to time a cold run).
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_dir() / "lm_outputs.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @staticmethod
    def key(model_id: str, kind: str, payload: object, settings: dict) -> str:
        blob = json.dumps([model_id, kind, payload, settings], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        with self._connect() as db:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                marks = ",".join("?" * len(chunk))
                for k, v in db.execute(f"SELECT key, value FROM outputs WHERE key IN ({marks})", chunk):
                    found[k] = json.loads(v)
        return found

    def put_many(self, items: dict[str, object]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in items.items()])


# --------------------------------------------------------------------------------------------
# The model wrapper
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeConfig:
    """Greedy decoding settings (part of the output-cache key).

    ``chat``: wrap the prompt in the model's chat template (``None``: when it has one);
    ``stop_at_newline``: stop a row at the first newline after some non-blank text.
    """

    max_new_tokens: int = 8
    chat: bool | None = None
    stop_at_newline: bool = True
    system: str | None = None

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise LMError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")


class _StopAtNewline:
    """Per-row stopping criterion: a row is done once its new text has a newline after content."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tokenizer, self.prompt_len = tokenizer, prompt_len

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        done = [("\n" in t.lstrip()) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass
class Throughput:
    """Prompts per second of one generation setting (measured without the output cache)."""

    batch_size: int
    n_prompts: int
    seconds: float
    new_tokens: int
    setting: str = ""
    cpu_seconds: float = float("nan")

    @property
    def prompts_per_s(self) -> float:
        return self.n_prompts / self.seconds if self.seconds else float("nan")


@dataclass
class CausalLM:
    """A loaded causal LM with batched greedy generation, scoring and an output cache."""

    model: object
    tokenizer: object
    name: str
    model_id: str
    source: str
    dtype: str = "float32"
    device: str = "cpu"
    quantize: str | None = None
    load_seconds: float = 0.0
    n_params: int = 0
    prefix_cache: bool = True
    cache: OutputCache | None = field(default=None, repr=False)
    stats: dict = field(default_factory=lambda: {"generated": 0, "cached": 0, "scored": 0,
                                                 "seconds": 0.0})

    def __post_init__(self):
        env = os.environ.get("FMBOOK_LM_CACHE", "1")
        if self.cache is None and env != "0":
            self.cache = OutputCache(None if env in ("", "1") else Path(env))
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._eos = self._eos_ids()
        self._prefix_memo: dict = {}

    # -- facts ------------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def cache_id(self) -> str:
        """What identifies this model's outputs: id, dtype and quantization."""
        return f"{self.model_id}|{self.dtype}|{self.quantize or 'none'}"

    def info(self) -> dict:
        return {"name": self.name, "model_id": self.model_id, "source": self.source,
                "dtype": self.dtype, "quantize": self.quantize, "device": self.device,
                "parameters_M": round(self.n_params / 1e6, 1), "chat_template": self.has_chat_template,
                "load_seconds": round(self.load_seconds, 1)}

    def _eos_ids(self) -> list[int]:
        ids = set()
        gen = getattr(self.model, "generation_config", None)
        for value in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(value)
        for special in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>"):
            tid = self.tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid is not None:
                ids.add(tid)
        return sorted(ids)

    # -- prompts ----------------------------------------------------------------------------
    def render(self, prompt: str | list[dict], chat: bool | None = None, system: str | None = None) -> str:
        """The exact text fed to the model: the chat template around ``prompt`` when used.

        ``prompt`` is a text or a list of chat messages (``{"role", "content"}``; chat models only).
        """
        if not isinstance(prompt, str):
            if not self.has_chat_template or chat is False:
                raise LMError(f"chat messages given but model {self.name!r} is used without a chat template")
            return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        use_chat = self.has_chat_template if chat is None else chat
        if use_chat and not self.has_chat_template:
            raise LMError(f"chat=True but model {self.name!r} has no chat template")
        if not use_chat:
            return prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, texts: list[str]) -> dict:
        add_special = not any(t.startswith(self.tokenizer.bos_token or "\0") for t in texts)
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)

    # -- generation -------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str | list[dict]], config: DecodeConfig | None = None,
                 batch_size: int = 16, use_cache: bool = True, progress: bool = False,
                 prefix_cache: bool | None = None) -> list[str]:
        """Greedy answers to ``prompts``, batched (see the module docstring for the two paths).

        A row stops at an end-of-sequence token, at ``max_new_tokens`` or (``stop_at_newline``) at
        the end of its first line; the answer is then the first line, stripped, else the whole
        text, stripped. Outputs are read from and written to the output cache (per batch, so an
        interrupted run keeps what it computed). ``progress`` logs progress at INFO level.
        """
        config = config or DecodeConfig()
        if batch_size < 1:
            raise LMError(f"batch_size must be >= 1, got {batch_size}")
        rendered = [self.render(p, config.chat, config.system) for p in prompts]
        settings = {**asdict(config), "chat": self.has_chat_template if config.chat is None else config.chat}
        prefix_cache = self.prefix_cache if prefix_cache is None else prefix_cache
        keys = [OutputCache.key(self.cache_id, "generate", r, settings) for r in rendered]
        found = self.cache.get_many(keys) if (self.cache and use_cache) else {}
        todo = list({k: r for k, r in zip(keys, rendered) if k not in found}.items())
        self.stats["cached"] += len(prompts) - len(todo)
        new: dict[str, str] = {}
        start = time.perf_counter()
        ids = [self._ids(r) for _, r in todo]
        batches = plan_batches(ids, batch_size, share_prefix=prefix_cache)
        meter = Progress(len(todo), desc=f"{self.name}: answers (budget {config.max_new_tokens} tokens)",
                         every_s=15.0, log=log) if progress and todo else None
        for rows in batches:
            chunk = [todo[j] for j in rows]
            outs = (self._generate_rows([ids[j] for j in rows], config) if prefix_cache
                    else self._generate_batch([r for _, r in chunk], config))
            batch_out = {k: o for (k, _), o in zip(chunk, outs)}
            new.update(batch_out)
            if self.cache and use_cache:
                self.cache.put_many(batch_out)
            if meter:
                meter.update(len(chunk))
        if meter:
            meter.close()
        self.stats["seconds"] += time.perf_counter() - start
        self.stats["generated"] += len(todo)
        found.update(new)
        return [found[k] for k in keys]

    def _ids(self, text: str) -> list[int]:
        tok = self.tokenizer
        add_special = not (tok.bos_token and text.startswith(tok.bos_token))
        return tok(text, add_special_tokens=add_special)["input_ids"]

    def _finish(self, text: str, config: DecodeConfig) -> str:
        return clean_answer(text) if config.stop_at_newline else text.strip()

    def _generate_batch(self, texts: list[str], config: DecodeConfig) -> list[str]:
        """The transformers path: one left-padded batch through ``model.generate``."""
        from transformers import StoppingCriteriaList

        enc = self._encode(texts).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        stops = StoppingCriteriaList([_StopAtNewline(self.tokenizer, prompt_len)]) if config.stop_at_newline else None
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=config.max_new_tokens, do_sample=False,
                                      eos_token_id=self._eos, pad_token_id=self.tokenizer.pad_token_id,
                                      stopping_criteria=stops, top_p=None, top_k=None, temperature=None)
        texts_out = self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
        return [self._finish(t, config) for t in texts_out]

    def _forward(self, **kwargs):
        if "logits_to_keep" in self._forward_params():
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs)

    def _forward_params(self) -> set:
        if not hasattr(self, "_fparams"):
            import inspect

            self._fparams = set(inspect.signature(self.model.forward).parameters)
        return self._fparams

    def _prefix_kv(self, prefix: list[int]):
        """Keys/values of ``prefix`` (batch 1), memoised (the last :data:`PREFIX_MEMO` prefixes), so a
        group split over several batches computes its prefix once."""
        from transformers import DynamicCache

        key = tuple(prefix)
        memo = self._prefix_memo
        if key in memo:
            memo[key] = memo.pop(key)  # most recently used last
            return memo[key]
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([prefix], device=self.device)
        with torch.inference_mode():
            self._forward(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache, use_cache=True)
        memo[key] = cache
        while len(memo) > PREFIX_MEMO:
            memo.pop(next(iter(memo)))
        return cache

    def _batch_cache(self, rows: list[list[int]]):
        """The key/value cache of a batch whose rows come from one or more prefix groups.

        Each group's common prefix (:func:`prefix_groups`) is computed once (:meth:`_prefix_kv`);
        row ``j`` of the cache holds its group's prefix, left-padded to the longest prefix of the
        batch. Returns ``(cache, prefix_lengths, width)``; a group whose prefix is shorter than four
        tokens gets no prefix (length 0) and its rows are computed whole.
        """
        from transformers import DynamicCache

        plen = [0] * len(rows)
        kv: dict[int, object] = {}
        for group in prefix_groups(rows):
            p = min(common_prefix_length([rows[j] for j in group]), min(len(rows[j]) for j in group) - 1)
            if p >= 4:
                prefix = self._prefix_kv(rows[group[0]][:p])
                for j in group:
                    plen[j], kv[j] = p, prefix
        width = max(plen)
        cache = DynamicCache(config=self.model.config)
        if width == 0:
            return cache, plen, width
        some = next(iter(kv.values()))
        for layer in range(len(some.layers)):
            ref = some.layers[layer].keys
            empty = ref.new_zeros(ref.shape[:2] + (0,) + ref.shape[3:])  # a row without prefix: all padding
            keys, values = [], []
            for j in range(len(rows)):
                k, v = (kv[j].layers[layer].keys, kv[j].layers[layer].values) if plen[j] else (empty, empty)
                pad = width - k.shape[2]
                keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
            cache.update(torch.cat(keys), torch.cat(values), layer)
        return cache, plen, width

    def _generate_rows(self, rows: list[list[int]], config: DecodeConfig) -> list[str]:
        """Greedy decoding of a batch of token rows, which may come from several prefix groups.

        Layout per row: ``pads | its group's prefix | pads | its suffix``. The prefixes' keys and
        values come from :meth:`_batch_cache` (computed once per group); pads are masked out and
        each suffix's position ids continue its own prefix, so each row sees exactly its own
        unpadded prompt. A row that ends (end of sequence, end of line with ``stop_at_newline``)
        leaves the batch: its keys and values are dropped from the cache and the next steps run on
        the remaining rows only.
        """
        tok = self.tokenizer
        batch = len(rows)
        cache, plen, p = self._batch_cache(rows)
        suffixes = [r[n:] for r, n in zip(rows, plen)]
        width = max(len(x) for x in suffixes)
        pad = tok.pad_token_id
        ids = torch.full((batch, width), pad, dtype=torch.long)
        mask = torch.zeros((batch, p + width), dtype=torch.long)
        pos = torch.zeros((batch, width), dtype=torch.long)
        for j, (x, n) in enumerate(zip(suffixes, plen)):
            mask[j, p - n:p] = 1
            ids[j, width - len(x):] = torch.tensor(x)
            mask[j, p + width - len(x):] = 1
            pos[j, width - len(x):] = torch.arange(n, n + len(x))
        eos = set(self._eos)
        generated: list[list[int]] = [[] for _ in range(batch)]
        alive = list(range(batch))  # original row index of each row still in the batch
        next_pos = pos[:, -1] + 1
        with torch.inference_mode():
            out = self._forward(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=pos.to(self.device), past_key_values=cache, use_cache=True)
            for step in range(config.max_new_tokens):
                nxt = out.logits[:, -1, :].argmax(-1).cpu().tolist()
                keep = []
                for slot, (row, token) in enumerate(zip(alive, nxt)):
                    if token in eos:
                        continue
                    generated[row].append(token)
                    if config.stop_at_newline and "\n" in tok.decode(generated[row], skip_special_tokens=True).lstrip():
                        continue
                    keep.append(slot)
                if not keep or step == config.max_new_tokens - 1:
                    break
                if len(keep) < len(alive):
                    index = torch.tensor(keep, device=self.device)
                    for layer in cache.layers:
                        layer.batch_select_indices(index)
                    mask, next_pos = mask[keep], next_pos[keep]
                    alive = [alive[s] for s in keep]
                    nxt = [nxt[s] for s in keep]
                mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
                out = self._forward(input_ids=torch.tensor(nxt)[:, None].to(self.device),
                                    attention_mask=mask.to(self.device),
                                    position_ids=next_pos[:, None].to(self.device), past_key_values=cache,
                                    use_cache=True)
                next_pos = next_pos + 1
        return [self._finish(tok.decode(g, skip_special_tokens=True), config) for g in generated]

    # -- scoring ----------------------------------------------------------------------------
    def score(self, prompts: Sequence[str | list[dict]], continuations: Sequence[str], chat: bool | None = None,
              system: str | None = None, batch_size: int = 16, use_cache: bool = True) -> list[float]:
        """Log-likelihood (natural log, summed over tokens) of each continuation after its prompt.

        Prompt and continuation are tokenized apart and joined, so the continuation's tokens are
        the same whatever the prompt; all pairs of a batch go through one forward pass.
        """
        if len(prompts) != len(continuations):
            raise LMError(f"score: {len(prompts)} prompts but {len(continuations)} continuations")
        rendered = [self.render(p, chat, system) for p in prompts]
        keys = [OutputCache.key(self.cache_id, "score", [r, c], {}) for r, c in zip(rendered, continuations)]
        found = self.cache.get_many(keys) if (self.cache and use_cache) else {}
        todo = [(k, r, c) for k, r, c in zip(keys, rendered, continuations) if k not in found]
        todo = list({t[0]: t for t in todo}.values())
        new = {}
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            values = self._score_batch([r for _, r, _ in chunk], [c for _, _, c in chunk])
            new.update({k: v for (k, _, _), v in zip(chunk, values)})
        self.stats["scored"] += len(todo)
        if new and self.cache and use_cache:
            self.cache.put_many(new)
        found.update(new)
        return [found[k] for k in keys]

    def _score_batch(self, prompts: list[str], conts: list[str]) -> list[float]:
        """Left-padded batch with explicit position ids; logits only for the last K positions,
        K = the longest continuation (the vocabulary projection dominates otherwise)."""
        tok = self.tokenizer
        add_special = not any(p.startswith(tok.bos_token or "\0") for p in prompts)
        p_ids = [tok(p, add_special_tokens=add_special)["input_ids"] for p in prompts]
        c_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in conts]
        rows = [p + c for p, c in zip(p_ids, c_ids)]
        width = max(len(r) for r in rows)
        keep = max(len(c) for c in c_ids) + 1
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, width - len(r):] = torch.tensor(r)
            mask[j, width - len(r):] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": keep} if "logits_to_keep" in self._forward_params() else {}
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=pos.to(self.device), **kwargs).logits[:, -keep:, :]
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        out = []
        for j, c in enumerate(c_ids):
            # logits at column i predict token i+1; the continuation fills the last len(c) columns
            positions = torch.arange(keep - 1 - len(c), keep - 1)
            out.append(float(logp[j, positions, torch.tensor(c)].sum()))
        return out

    # -- speed ------------------------------------------------------------------------------
    def throughput(self, prompts: Sequence[str], batch_size: int, config: DecodeConfig | None = None,
                   setting: str = "", prefix_cache: bool | None = None) -> tuple[Throughput, list[str]]:
        """Time :meth:`generate` on ``prompts`` without the output cache; return speed and answers."""
        config = config or DecodeConfig()
        self._prefix_memo = {}  # time the prefixes too, not a memo filled by an earlier call
        start, cpu = time.perf_counter(), time.process_time()
        answers = self.generate(prompts, config, batch_size=batch_size, use_cache=False,
                                prefix_cache=prefix_cache)
        seconds = time.perf_counter() - start
        return Throughput(batch_size, len(prompts), seconds, config.max_new_tokens, setting,
                          time.process_time() - cpu), answers


def _lcp(a: Sequence, b: Sequence) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def common_prefix_length(rows: Sequence[Sequence]) -> int:
    """Length of the prefix shared by every row (tokens or characters)."""
    if not rows:
        return 0
    first = rows[0]
    return min((_lcp(first, r) for r in rows[1:]), default=len(first))


def prefix_groups(rows: Sequence[Sequence[int]], keep: float = 0.85) -> list[list[int]]:
    """Rows that share a prefix, as lists of row indices (each sorted by length).

    Rows sorted by their tokens put rows that share a prefix side by side; a *group* grows while
    the prefix common to the whole group stays at least ``keep`` times what it was (so a group is
    e.g. one task x stimulus x demonstration draw).
    """
    order = sorted(range(len(rows)), key=lambda i: list(rows[i]))
    groups: list[list[int]] = []
    current: list[int] = []
    common = 0
    for i in order:
        if current:
            shared = _lcp(rows[current[-1]], rows[i])
            shared = shared if len(current) == 1 else min(common, shared)
            if len(current) > 1 and shared < keep * common:
                groups.append(current)
                current, common = [i], len(rows[i])
                continue
            current.append(i)
            common = shared
        else:
            current, common = [i], len(rows[i])
    if current:
        groups.append(current)
    return [sorted(g, key=lambda i: len(rows[i])) for g in groups]


def plan_batches(rows: Sequence[Sequence[int]], batch_size: int, share_prefix: bool = True,
                 keep: float = 0.85) -> list[list[int]]:
    """Order and batch token ``rows`` for generation; returns lists of row indices.

    Without ``share_prefix``: sorted by length, cut into batches of ``batch_size`` (least padding).
    With it: :func:`prefix_groups`, packed in order into batches of up to ``batch_size`` rows (a
    group larger than a batch is split), so that a batch holds several groups: every group's prefix
    is computed once and the decoding steps run on full batches (on a CPU a decoding step costs
    about the same for 4 rows as for 32, so full batches are the larger saving).
    """
    if batch_size < 1:
        raise LMError(f"batch_size must be >= 1, got {batch_size}")
    if not share_prefix:
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    for group in prefix_groups(rows, keep):
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            if len(current) + len(chunk) > batch_size:
                batches.append(current)
                current = []
            current = current + chunk
    if current:
        batches.append(current)
    return batches


def clean_answer(text: str) -> str:
    """The first non-blank line of a generated text, stripped."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def batched(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
