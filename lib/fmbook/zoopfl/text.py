"""A text classifier as the black box (the paper's NLP experiments; ``full`` profile).

A transformer text classifier (``AutoModelForSequenceClassification`` by hub id or saved folder) is
queried with **input embeddings** ``(N, L, H)`` rather than token ids, because input surgery and
zeroth-order perturbations need a continuous input. Our choice, as in black-box tuning of language
models served as APIs (the service accepts embeddings; the client computes them with the
service's public embedding table, :class:`TextEmbedder`, which is not a query of the model):

* :func:`hub_text_blackbox` returns the :class:`~fmbook.zoopfl.blackbox.BlackBox` (input
  ``(max_length, hidden)``, outputs the classifier's logits) and the embedder;
* padding positions are all-zero rows; the black box masks every all-zero row out of attention;
* surgery on text uses :class:`~fmbook.zoopfl.surgery.SurgeryAE` with ``output="linear"`` on the
  flattened embedding matrix (``ZooPFLConfig(surgery_output="linear")``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from fmbook.zoopfl.blackbox import BlackBox, module_blackbox


class TextEmbedder:
    """Token embeddings of texts, padded/truncated to ``max_length``, padding rows set to zero."""

    def __init__(self, tokenizer, embeddings: nn.Embedding, max_length: int) -> None:
        self._tokenizer, self._weight, self.max_length = tokenizer, embeddings.weight.detach().clone(), max_length
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        enc = self._tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                              return_tensors="pt")
        self.calls += len(texts)
        emb = self._weight[enc["input_ids"]] * enc["attention_mask"][..., None]
        return emb.float().numpy()


class _EmbeddingsClassifier(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x.abs().sum(-1) > 0).long()
        mask[:, 0] = 1  # never an empty sequence
        return self.model(inputs_embeds=x, attention_mask=mask).logits


def hub_text_blackbox(hub_id: str, max_length: int = 32, **kwargs) -> tuple[BlackBox, TextEmbedder]:
    """``(black box, embedder)`` for a sequence classifier by hub id or saved folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hub_id)
    model = AutoModelForSequenceClassification.from_pretrained(hub_id).eval()
    embedder = TextEmbedder(tokenizer, model.get_input_embeddings(), max_length)
    hidden = int(model.get_input_embeddings().weight.shape[1])
    info = {"kind": "text classifier", "model_type": model.config.model_type, "max_length": max_length,
            "parameters": sum(p.numel() for p in model.parameters())}
    box = module_blackbox(_EmbeddingsClassifier(model), (max_length, hidden), int(model.config.num_labels),
                          hub_id, info, **kwargs)
    return box, embedder
