"""EmotionDecode: what the stimuli look like inside a model (Li et al., arXiv 2312.11111, ICML 2024).

The paper averages the input embeddings of all EmotionPrompt stimuli (EP01-EP11), and separately
of all EmotionAttack stimuli, into one "meta" vector each; it decodes that vector at different
layers of Llama-2-13b-chat (the figure shows layers 39 and 40) and feeds it back to measure the
change in performance. This module does the same on any causal LM of :mod:`fmbook.core.lm`:

* :func:`stimulus_embedding`: the mean input embedding of a stimulus's tokens; :func:`meta_vector`:
  the mean of those over a set of stimuli;
* :func:`logit_lens`: a vector (or a text) through the model, and at every layer the final norm and
  the output head applied to that layer's hidden state (the "logit lens"), with the top tokens;
* :func:`representation_similarity`: positive vs attack representations across layers;
* :func:`evaluate_soft`: accuracy when one inserted vector (a *soft prompt*, passed through
  ``inputs_embeds``) takes the stimulus's place in EmotionPrompt's prompts, checked by EmotionPrompt's
  task checkers. The paper's exact feed-back procedure was not found; this is our reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from fmbook import emotion_prompt as ep
from fmbook.core.lm import CausalLM, clean_answer

#: Stands in a prompt where the soft prompt goes; never sent to the model.
SLOT = "\u27e6SLOT\u27e7"


class DecodeError(ValueError):
    """A bad parameter (the message names it and the allowed values)."""


# ------------------------------------------------------------------------------------------
# The model's parts
# ------------------------------------------------------------------------------------------

def _backbone(lm: CausalLM):
    inner = getattr(lm.model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "norm"):
        raise DecodeError(f"model {lm.name!r}: expected a decoder with .model.layers and .model.norm "
                          "(Llama, Qwen2, Gemma, Mistral style)")
    return inner


def n_layers(lm: CausalLM) -> int:
    """Number of decoder layers; hidden states are numbered 0 (the input embeddings) to this."""
    return len(_backbone(lm).layers)


def check_layers(lm: CausalLM, layers: Sequence[int] | None) -> list[int]:
    """Layer indices in ``0..L`` (0 = input embeddings, L = last layer; negative counts from L)."""
    total = n_layers(lm)
    if layers is None:
        return list(range(total + 1))
    out = []
    for layer in layers:
        if not isinstance(layer, (int, np.integer)) or not -(total + 1) <= int(layer) <= total:
            raise DecodeError(f"layer {layer!r} is outside the model {lm.name!r}; allowed: 0..{total} "
                              f"(0 = input embeddings) or -1..-{total + 1}")
        out.append(int(layer) % (total + 1))
    return out


def embed(lm: CausalLM, ids: Sequence[int]) -> torch.Tensor:
    """Input embeddings of token ``ids`` exactly as the model computes them (incl. any scaling)."""
    emb = lm.model.get_input_embeddings()
    with torch.inference_mode():
        return emb(torch.tensor([list(ids)], device=lm.device))[0].float().cpu()


def _head_logits(lm: CausalLM, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm + output head (+ Gemma's logit soft-capping when configured) on hidden states."""
    inner = _backbone(lm)
    param = next(lm.model.parameters())
    with torch.inference_mode():
        logits = lm.model.get_output_embeddings()(inner.norm(hidden.to(param.device, param.dtype)))
        cap = getattr(lm.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    return logits.float().cpu()


def hidden_states(lm: CausalLM, inputs_embeds: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states of one sequence (``[n, d]`` embeddings) at every layer: ``L + 1`` tensors
    ``[n, d]``: the input embeddings, then each decoder layer's output (before the final norm)."""
    inner = _backbone(lm)
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append((output[0] if isinstance(output, tuple) else output)[0].detach().float().cpu())

    handles = [layer.register_forward_hook(hook) for layer in inner.layers]
    param = next(lm.model.parameters())
    x = inputs_embeds.to(param.device, param.dtype)[None]
    try:
        with torch.inference_mode():
            lm.model(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long, device=x.device),
                     use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [inputs_embeds.float().cpu(), *captured]


# ------------------------------------------------------------------------------------------
# Mean embeddings and the "meta" stimulus
# ------------------------------------------------------------------------------------------

def stimulus_ids(lm: CausalLM, text: str) -> list[int]:
    """Token ids of ``text`` as it appears inside a prompt (after a space, no special tokens)."""
    return lm.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]


def stimulus_embedding(lm: CausalLM, text: str) -> torch.Tensor:
    """The mean input embedding over the tokens of ``text`` (``[d]``)."""
    ids = stimulus_ids(lm, text)
    if not ids:
        raise DecodeError("stimulus text is empty")
    return embed(lm, ids).mean(0)


def meta_vector(lm: CausalLM, texts: Sequence[str]) -> torch.Tensor:
    """The "meta" stimulus: the mean over stimuli of their mean embeddings (the paper's average)."""
    if not texts:
        raise DecodeError("meta_vector needs at least one stimulus")
    return torch.stack([stimulus_embedding(lm, t) for t in texts]).mean(0)


# ------------------------------------------------------------------------------------------
# Logit lens
# ------------------------------------------------------------------------------------------

PREFIXES = ("chat", "bos", "none")


def prefix_ids(lm: CausalLM, prefix: str = "chat") -> list[int]:
    """Tokens placed before a decoded vector or text. ``chat``: the model's chat template up to the
    start of the user's message (the place of a stimulus in a prompt; ``bos`` when there is no
    template); ``bos``: the BOS token when the tokenizer has one; ``none``: nothing.

    Without any prefix the vector sits at position 0, where many models park very large activations
    (an "attention sink"), and every layer then decodes to the same few tokens."""
    if prefix not in PREFIXES:
        raise DecodeError(f"prefix={prefix!r}; allowed: {', '.join(PREFIXES)}")
    if prefix == "chat" and lm.has_chat_template:
        left = lm.render([{"role": "user", "content": SLOT}]).split(SLOT)[0]
        return lm.tokenizer(left, add_special_tokens=False)["input_ids"]
    if prefix == "none":
        return []
    bos = lm.tokenizer.bos_token_id
    return [bos] if bos is not None else []


def logit_lens(lm: CausalLM, vectors: Mapping[str, torch.Tensor], layers: Sequence[int] | None = None,
               top_k: int = 5, prefix: str = "chat") -> pd.DataFrame:
    """Decode each vector at each layer: it is fed as a one-position input after
    :func:`prefix_ids`, and the hidden state at its position in every layer goes through the final
    norm and the output head. One row per (vector, layer): top tokens and their probabilities, and
    the entropy of the distribution (nats)."""
    if top_k < 1:
        raise DecodeError(f"top_k must be >= 1, got {top_k}")
    layers = check_layers(lm, layers)
    pre = prefix_ids(lm, prefix)
    rows = []
    for name, vec in vectors.items():
        x = torch.cat([embed(lm, pre), vec.float()[None]]) if pre else vec.float()[None]
        hs = hidden_states(lm, x)
        for layer in layers:
            logits = _head_logits(lm, hs[layer][-1:])[0]
            logp = torch.log_softmax(logits, -1)
            top = torch.topk(logp, top_k)
            rows.append({"vector": name, "layer": layer,
                         "tokens": [lm.tokenizer.decode([int(i)]) for i in top.indices],
                         "probs": [float(math.exp(v)) for v in top.values],
                         "entropy": float(-(logp.exp() * logp).sum())})
    return pd.DataFrame(rows)


def decoded_string(lm: CausalLM, vector: torch.Tensor, layer: int, n_tokens: int = 12, prefix: str = "chat") -> str:
    """The paper's kind of "meta prompt" read-out: the top tokens of ``vector`` at ``layer``, joined."""
    table = logit_lens(lm, {"v": vector}, [layer], top_k=n_tokens, prefix=prefix)
    return "".join(table.iloc[0]["tokens"])


# ------------------------------------------------------------------------------------------
# Representations across layers
# ------------------------------------------------------------------------------------------

def text_representation(lm: CausalLM, text: str, prefix: str = "chat") -> torch.Tensor:
    """Mean hidden state over the tokens of ``text`` (after :func:`prefix_ids`) at every layer:
    ``[L + 1, d]``."""
    pre = prefix_ids(lm, prefix)
    hs = hidden_states(lm, embed(lm, pre + stimulus_ids(lm, text)))
    return torch.stack([h[len(pre):].mean(0) for h in hs])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float()[None], b.float()[None])[0])


_cos = cosine


def representation_similarity(lm: CausalLM, positive: Mapping[str, str], attack: Mapping[str, str],
                              prefix: str = "chat") -> pd.DataFrame:
    """Per layer: the cosine similarity of the positive and attack centroids (each the mean over
    its stimuli of the text's mean hidden state), and the mean pairwise cosine within each group and
    across groups after subtracting the mean of all stimuli at that layer (otherwise the large
    shared component makes every cosine close to 1)."""
    reps = {k: text_representation(lm, t, prefix) for k, t in {**positive, **attack}.items()}
    pos = torch.stack([reps[k] for k in positive])  # [P, L+1, d]
    att = torch.stack([reps[k] for k in attack])
    grand = torch.cat([pos, att]).mean(0)
    rows = []
    for layer in range(pos.shape[1]):
        p, a = pos[:, layer] - grand[layer], att[:, layer] - grand[layer]

        def mean_pair(x, y, same):
            vals = [_cos(x[i], y[j]) for i in range(len(x)) for j in range(len(y)) if not (same and j <= i)]
            return float(np.mean(vals)) if vals else math.nan

        rows.append({"layer": layer,
                     "centroids (raw)": _cos(pos[:, layer].mean(0), att[:, layer].mean(0)),
                     "within positive": mean_pair(p, p, True), "within attack": mean_pair(a, a, True),
                     "across": mean_pair(p, a, False)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------
# Soft prompts: one inserted vector in place of the stimulus
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SoftInsert:
    """What goes in the stimulus's place: embeddings ``[n, d]`` (a soft prompt), token ids (a real
    text, for comparison through the same path), or nothing (``None``: the original prompt)."""

    name: str
    vectors: torch.Tensor | None = None
    ids: tuple[int, ...] | None = None

    def key(self) -> str:
        """What identifies the insert in the output cache (a hash of its vectors or its ids)."""
        import hashlib

        if self.vectors is not None:
            return "v:" + hashlib.sha256(self.vectors.float().cpu().numpy().tobytes()).hexdigest()[:20]
        return "ids:" + ",".join(map(str, self.ids or ()))

    def embeddings(self, lm: CausalLM) -> torch.Tensor | None:
        if self.vectors is not None:
            v = self.vectors.float()
            return v[None] if v.ndim == 1 else v
        if self.ids:
            return embed(lm, self.ids)
        return None


def text_insert(lm: CausalLM, name: str, text: str) -> SoftInsert:
    return SoftInsert(name, ids=tuple(stimulus_ids(lm, text)))


def slot_grid(lm: CausalLM, cfg: ep.EvalConfig) -> pd.DataFrame:
    """EmotionPrompt's grid with :data:`SLOT` where the stimulus goes (after the instruction), each
    prompt rendered (chat template) and split into the text ``left`` and ``right`` of the slot."""
    from dataclasses import replace

    slot = ep.ExtraCondition("slot", SLOT, "after")
    grid = ep.build_grid(replace(cfg, conditions=(ep.BASELINE, "slot"), extra_conditions=(slot,)),
                         chat=lm.has_chat_template)
    grid = grid[grid.condition == "slot"].drop(columns=["condition"]).reset_index(drop=True)
    rendered = [lm.render(p) for p in grid.prompt]
    parts = [r.split(" " + SLOT) for r in rendered]
    if any(len(p) != 2 for p in parts):
        raise DecodeError("the stimulus slot must occur exactly once in every prompt")
    grid["left"], grid["right"] = [p[0] for p in parts], [p[1] for p in parts]
    return grid


def _row_ids(lm: CausalLM, left: str, right: str) -> tuple[list[int], list[int]]:
    tok = lm.tokenizer
    add_special = not (tok.bos_token and left.startswith(tok.bos_token))
    return tok(left, add_special_tokens=add_special)["input_ids"], tok(right, add_special_tokens=False)["input_ids"]


def greedy_from_embeddings(lm: CausalLM, rows: Sequence[torch.Tensor], max_new_tokens: int = 16,
                           batch_size: int = 16, stop_at_newline: bool = True) -> list[str]:
    """Greedy answers for sequences given as input embeddings (``[n_i, d]`` each), left-padded,
    with the same stopping rule and answer cleaning as :meth:`fmbook.core.lm.CausalLM.generate`."""
    from transformers import DynamicCache

    param = next(lm.model.parameters())
    eos = set(lm._eos)
    out: list[str] = [""] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(rows[i].shape[0] for i in idx)
        d = rows[idx[0]].shape[1]
        x = torch.zeros((len(idx), width, d), dtype=param.dtype)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            n = rows[i].shape[0]
            x[j, width - n:] = rows[i].to(param.dtype)
            mask[j, width - n:] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache(config=lm.model.config)
        done = torch.zeros(len(idx), dtype=torch.bool)
        generated: list[list[int]] = [[] for _ in idx]
        with torch.inference_mode():
            res = lm.model(inputs_embeds=x.to(lm.device), attention_mask=mask.to(lm.device),
                           position_ids=pos.to(lm.device), past_key_values=cache, use_cache=True)
            next_pos = pos[:, -1] + 1
            for step in range(max_new_tokens):
                nxt = res.logits[:, -1, :].argmax(-1).cpu()
                for j in range(len(idx)):
                    if done[j]:
                        continue
                    if int(nxt[j]) in eos:
                        done[j] = True
                        continue
                    generated[j].append(int(nxt[j]))
                    if stop_at_newline and "\n" in lm.tokenizer.decode(generated[j], skip_special_tokens=True).lstrip():
                        done[j] = True
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                feed = torch.where(done, torch.full_like(nxt, lm.tokenizer.pad_token_id), nxt)
                mask = torch.cat([mask, torch.ones((len(idx), 1), dtype=torch.long)], dim=1)
                res = lm.model(input_ids=feed[:, None].to(lm.device), attention_mask=mask.to(lm.device),
                               position_ids=next_pos[:, None].to(lm.device), past_key_values=cache, use_cache=True)
                next_pos = next_pos + 1
        for j, i in enumerate(idx):
            text = lm.tokenizer.decode(generated[j], skip_special_tokens=True)
            out[i] = clean_answer(text) if stop_at_newline else text.strip()
    return out


def evaluate_soft(lm: CausalLM, cfg: ep.EvalConfig, inserts: Sequence[SoftInsert]) -> pd.DataFrame:
    """Accuracy with each insert in the stimulus's place, on EmotionPrompt's items and checkers.

    Rows as :func:`fmbook.emotion_prompt.evaluate` returns them (``condition`` = the insert's name):
    greedy free replies of ``cfg.max_new_tokens`` tokens, the answer read out of each and checked
    (:func:`fmbook.emotion_prompt.score_outputs`). Replies are kept in the model's output cache,
    keyed by the text on both sides of the slot and a hash of the inserted vectors."""
    from fmbook.core.lm import OutputCache

    names = [s.name for s in inserts]
    if len(set(names)) != len(names):
        raise DecodeError(f"insert names must be unique, got {names}")
    grid = slot_grid(lm, cfg)
    sides = [_row_ids(lm, l, r) for l, r in zip(grid.left, grid.right)]
    settings = {"max_new_tokens": cfg.max_new_tokens, "stop_at_newline": False}
    frames = []
    for ins in inserts:
        keys = [OutputCache.key(lm.cache_id, "soft-generate", [l, r, ins.key()], settings)
                for l, r in zip(grid.left, grid.right)]
        found = lm.cache.get_many(keys) if lm.cache else {}
        todo = [j for j, k in enumerate(keys) if k not in found]
        mid = ins.embeddings(lm)
        rows = []
        for j in todo:
            left, right = sides[j]
            parts = [embed(lm, left)] + ([mid] if mid is not None else []) + [embed(lm, right)]
            rows.append(torch.cat(parts))
        new = dict(zip([keys[j] for j in todo], greedy_from_embeddings(lm, rows, cfg.max_new_tokens, cfg.batch_size,
                                                                        stop_at_newline=False)))
        if new and lm.cache:
            lm.cache.put_many(new)
        found.update(new)
        lm.stats["generated"] += len(todo)
        lm.stats["cached"] += len(keys) - len(todo)
        outs = [found[k] for k in keys]
        g = grid.copy()
        g["condition"], g["output"] = ins.name, outs
        g = ep.score_outputs(g)
        g["model"] = lm.name
        frames.append(g)
    return pd.concat(frames, ignore_index=True).drop(columns=["_example", "left", "right"])


def equivalence(soft: pd.DataFrame, real: pd.DataFrame, meta: str, stimuli: Sequence[str]) -> np.ndarray:
    """Per item: correct(meta soft prompt) - mean over ``stimuli`` of correct(real stimulus), on the
    items both frames share (the units of the meta-vs-stimuli equivalence claim)."""
    a = soft[soft.condition == meta].set_index(["model", "mode", "item"])["correct"].astype(float)
    r = real[real.condition.isin(stimuli)]
    b = r.pivot_table(index=["model", "mode", "item"], columns="condition", values="correct",
                      aggfunc="first").astype(float).mean(axis=1)
    joined = pd.concat([a.rename("meta"), b.rename("real")], axis=1).dropna()
    return (joined["meta"] - joined["real"]).to_numpy()
