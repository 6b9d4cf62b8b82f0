"""LoRA fine-tuning of a chat model on survey answers (CultureLLM, arXiv 2402.10946, Section 3.3;
the official ``llama_finetune.py``: Llama-2-70b-chat, QLoRA 4-bit nf4, r=64, alpha=16, dropout 0.1,
6 epochs, batch 4, lr 2e-4 constant, max_grad_norm 0.3, weight decay 0.001, warmup 3%).

One model per culture (CultureLLM-Ar, -Zh, ...) or one for all (CultureLLM-One: every culture's
rows, the culture named in the system prompt). The loss is on the assistant's answer only (its
digits and the end-of-turn marker). Adapters are cached under ``cache_dir()/culture_llm/adapters/``
keyed by a hash of the training rows, the configuration and the base model, so re-running an
evaluation does not retrain.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

_ADAPTER_VERSION = 1  # bump when the training recipe changes


class FinetuneError(ValueError):
    """A bad fine-tuning parameter (the message names it and the allowed values)."""


@dataclass(frozen=True)
class LoraSettings:
    """The paper's open-model recipe as defaults (``llama_finetune.py``)."""

    r: int = 64
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # PEFT's default for Llama/Qwen2
    top_layers: int = 0  # > 0: LoRA only in the top N layers (a CPU shortcut: no backward below them); 0: all
    epochs: float = 6.0
    batch_size: int = 4
    lr: float = 2e-4
    schedule: str = "constant"  # with warmup_ratio of linear warm-up
    warmup_ratio: float = 0.03
    weight_decay: float = 0.001
    max_grad_norm: float = 0.3
    max_steps: int = -1  # > 0 caps the optimiser steps (our CPU budget); -1: epochs decide
    quantize_4bit: bool = False  # QLoRA (nf4, bitsandbytes, CUDA only): the paper's setting at `full`
    seed: int = 0

    def __post_init__(self):
        if self.schedule not in ("constant", "linear"):
            raise FinetuneError(f"schedule={self.schedule!r}; allowed: constant, linear")
        for name in ("r", "alpha", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise FinetuneError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not 0 <= self.dropout < 1:
            raise FinetuneError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise FinetuneError("need epochs > 0 or max_steps > 0")

    def steps(self, n_rows: int) -> int:
        per_epoch = math.ceil(n_rows / self.batch_size)
        total = math.ceil(per_epoch * self.epochs)
        return min(total, self.max_steps) if self.max_steps > 0 else total


# ---------------------------------------------------------------------------------------------
# Loading the base model (offline asset, folder, or hub id with 4-bit QLoRA)
# ---------------------------------------------------------------------------------------------

def bnb_config():
    """The paper's 4-bit quantisation (nf4, float16 compute, no double quantisation)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.float16, bnb_4bit_use_double_quant=False)


def load_base(name: str, device: str = "cpu", quantize_4bit: bool = False, verbose: bool = False):
    """A :class:`fmbook.core.lm.CausalLM`: offline asset or folder via ``load_causal_lm``; with
    ``quantize_4bit`` (``full``, a CUDA GPU) a hub id is loaded in 4-bit nf4 for QLoRA."""
    from transformers.utils import logging as hf_logging

    from fmbook.core import lm

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in notebooks
    if not quantize_4bit:
        return lm.load_causal_lm(name, device=device, verbose=verbose)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not torch.cuda.is_available():
        raise FinetuneError("quantize_4bit=True (QLoRA) needs a CUDA GPU and bitsandbytes; "
                            "use quantize_4bit=False on CPU")
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(name, quantization_config=bnb_config(), device_map={"": 0},
                                                 dtype=torch.float16)
    tok = AutoTokenizer.from_pretrained(name)
    n = sum(p.numel() for p in model.parameters())
    return lm.CausalLM(model=model, tokenizer=tok, name=name, model_id=name, source="hub", dtype="nf4",
                       device="cuda", load_seconds=time.perf_counter() - start, n_params=n)


def describe(model) -> dict:
    """What identifies a loaded model, for ``run.uses_model(name, **describe(model))``."""
    info = dict(model.info())
    info["weights"] = info.pop("model_id", None)
    return info


# ---------------------------------------------------------------------------------------------
# Examples in the chat format
# ---------------------------------------------------------------------------------------------

def end_of_turn(tokenizer) -> str:
    """The text the chat template puts after an assistant message (``<|im_end|>`` for Qwen)."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\u00a7"}]
    full = tokenizer.apply_chat_template(probe, tokenize=False)
    tail = full[full.rindex("\u00a7") + 1:]
    return tail.rstrip("\n") or (tokenizer.eos_token or "")


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt text up to where the assistant's answer starts."""
    msgs = [m for m in messages if m["role"] != "assistant"]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class TrainRow:
    """One training example: chat messages whose last one is the assistant's answer."""

    messages: tuple
    unit: str
    q_id: int
    step: int  # 0: WVS seed, 1: paraphrase, 2: synonym variant

    def as_json(self) -> dict:
        return {"messages": list(self.messages), "unit": self.unit, "q_id": self.q_id, "step": self.step}


def rows_hash(rows: Sequence[TrainRow]) -> str:
    blob = json.dumps([r.as_json() for r in rows], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def encode_rows(tokenizer, rows: Sequence[TrainRow]) -> list[tuple[list[int], int]]:
    """Token ids of each example and the number of answer tokens at its end (the supervised part)."""
    eot = end_of_turn(tokenizer)
    out = []
    for r in rows:
        prompt = render_prompt(tokenizer, list(r.messages))
        answer = r.messages[-1]["content"] + eot
        add_special = not (tokenizer.bos_token and prompt.startswith(tokenizer.bos_token))
        p_ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
        a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        out.append((p_ids + a_ids, len(a_ids)))
    return out


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass
class Adapter:
    """A trained (or loaded) LoRA adapter and its training record."""

    key: str
    folder: Path
    base_id: str
    history: dict  # step, loss, lr, tokens, seconds
    from_cache: bool
    n_rows: int
    settings: LoraSettings

    @property
    def seconds(self) -> float:
        return float(self.history.get("seconds", 0.0))

    @property
    def tokens_per_s(self) -> float:
        s = self.seconds
        return float(self.history.get("tokens", 0)) / s if s > 0 else float("nan")


def adapter_key(rows: Sequence[TrainRow], settings: LoraSettings, base_id: str) -> str:
    blob = json.dumps([rows_hash(rows), asdict(settings), base_id, _ADAPTER_VERSION], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def adapters_dir() -> Path:
    from fmbook.core.paths import cache_dir

    return cache_dir() / "culture_llm" / "adapters"


def _answer_loss(model, batch, device):
    """Mean cross-entropy over the answer tokens; logits only where the answer is predicted."""
    import torch

    ids_list, n_ans = zip(*batch)
    width = max(len(x) for x in ids_list)
    pad = 0
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for j, x in enumerate(ids_list):
        ids[j, :len(x)] = torch.tensor(x)
        mask[j, :len(x)] = 1
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.model(input_ids=ids.to(device), attention_mask=mask.to(device))
    hidden = out.last_hidden_state
    rows, cols, targets = [], [], []
    for j, (x, k) in enumerate(zip(ids_list, n_ans)):
        for t in range(len(x) - k, len(x)):
            rows.append(j), cols.append(t - 1), targets.append(x[t])
    h = hidden[torch.tensor(rows), torch.tensor(cols)]
    logits = base.lm_head(h).float()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(targets, device=logits.device))


def train_adapter(base, rows: Sequence[TrainRow], settings: LoraSettings = LoraSettings(), name: str = "",
                  log_every: int = 1, force: bool = False, logger=None) -> Adapter:
    """Train a LoRA adapter on ``rows`` over the base :class:`~fmbook.core.lm.CausalLM` (or load it
    from the cache). The base model's weights are left as they were (the adapter is unloaded)."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model

    from fmbook.core.paths import atomic_folder

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    if not rows:
        raise FinetuneError("train_adapter needs at least one training row")
    key = adapter_key(rows, settings, base.cache_id)
    folder = adapters_dir() / key
    if (folder / "history.json").is_file() and not force:
        return Adapter(key, folder, base.cache_id, json.loads((folder / "history.json").read_text()), True,
                       len(rows), settings)
    if logger is None:  # the runner shows fmbook's log lines on its console, never in the notebook
        import logging

        logger = logging.getLogger(__name__).info
    encoded = encode_rows(base.tokenizer, rows)
    n_layers = int(getattr(base.model.config, "num_hidden_layers", 0) or
                   getattr(getattr(base.model.config, "text_config", None), "num_hidden_layers", 0))
    layers = (list(range(max(n_layers - settings.top_layers, 0), n_layers))
              if settings.top_layers > 0 and n_layers else None)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                        task_type="CAUSAL_LM", target_modules=list(settings.target_modules),
                        layers_to_transform=layers)
    torch.manual_seed(settings.seed)
    model = base.model
    if settings.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    peft_model = get_peft_model(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    total = settings.steps(len(rows))
    warm = max(1, int(round(settings.warmup_ratio * total))) if settings.warmup_ratio > 0 else 0
    rng = random.Random(settings.seed)
    order: list[int] = []
    history = {"step": [], "loss": [], "lr": [], "name": name, "rows": len(rows), "steps": total,
               "trainable_params": int(sum(p.numel() for p in params))}
    tokens, start, running = 0, time.perf_counter(), []
    try:
        for step in range(total):
            if len(order) < settings.batch_size:
                perm = list(range(len(rows)))
                rng.shuffle(perm)
                order += perm
            idx, order = order[:settings.batch_size], order[settings.batch_size:]
            batch = [encoded[i] for i in idx]
            tokens += sum(len(x) for x, _ in batch)
            lr = settings.lr * (min(1.0, (step + 1) / warm) if warm else 1.0)
            if settings.schedule == "linear":
                lr *= max(0.0, 1 - step / total)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = _answer_loss(peft_model, batch, base.device)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            opt.step()
            running.append(float(loss.detach()))
            if (step + 1) % log_every == 0 or step == total - 1:
                history["step"].append(step + 1)
                history["loss"].append(float(np.mean(running)))
                history["lr"].append(lr)
                running = []
                if logger:
                    logger(f"{name}: step {step + 1}/{total} loss {history['loss'][-1]:.3f}")
        history["seconds"] = time.perf_counter() - start
        history["tokens"] = tokens
        peft_model.eval()
        with atomic_folder(folder, replace=False) as staging:
            peft_model.save_pretrained(staging)
            (staging / "rows.jsonl").write_text("\n".join(json.dumps(r.as_json(), ensure_ascii=False) for r in rows))
            (staging / "settings.json").write_text(json.dumps({**asdict(settings), "base": base.cache_id}, indent=1))
            (staging / "history.json").write_text(json.dumps(history))
    finally:
        base.model = peft_model.unload() if hasattr(peft_model, "unload") else model
        base.model.eval()
    return Adapter(key, folder, base.cache_id, history, False, len(rows), settings)


class tuned:
    """Context manager: ``with tuned(base, adapter) as m:`` gives a :class:`~fmbook.core.lm.CausalLM`
    view of the base model with the adapter attached (its own output-cache id); unloads on exit."""

    def __init__(self, base, adapter: Adapter | None):
        self.base, self.adapter = base, adapter

    def __enter__(self):
        from fmbook.core.lm import CausalLM

        if self.adapter is None:
            return self.base
        from peft import PeftModel

        self._original = self.base.model
        self._peft = PeftModel.from_pretrained(self._original, str(self.adapter.folder))
        self._peft.eval()
        return CausalLM(model=self._peft, tokenizer=self.base.tokenizer, name=f"{self.base.name}+lora",
                        model_id=f"{self.base.model_id}+lora:{self.adapter.key}", source=self.base.source,
                        dtype=self.base.dtype, device=self.base.device, cache=self.base.cache,
                        n_params=self.base.n_params)

    def __exit__(self, *exc):
        if self.adapter is not None:
            self.base.model = self._peft.unload()
            self.base.model.eval()
        return False


def history_frame(adapters: dict[str, Adapter]) -> pd.DataFrame:
    """Training curves of several adapters as a long table (model, step, loss)."""
    rows = []
    for name, a in adapters.items():
        for s, l in zip(a.history["step"], a.history["loss"]):
            rows.append({"model": name, "step": s, "loss": l})
    return pd.DataFrame(rows)
