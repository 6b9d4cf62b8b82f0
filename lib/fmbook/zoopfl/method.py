"""ZooPFL's local training: what one client does in one round, for every method compared.

The pieces (arXiv 2310.05143, Figure 1(d)): input surgery (:class:`~fmbook.zoopfl.surgery.SurgeryAE`
with a client embedding) -> black box (:class:`~fmbook.zoopfl.blackbox.BlackBox`) -> re-mapping
(:class:`~fmbook.zoopfl.surgery.ReMap`). One **ZooPFL step** on a batch ``(x, y)`` of a client:

1. ``z = [E(x), e_c]`` (bottleneck and client embedding, ``B x (k + m)``);
2. base outputs ``o = BB(D(z))`` (``B`` queries) and losses ``l(z) = CE(R(o), y)``;
3. a zeroth-order estimate ``g ~ dl/dz`` per example (:mod:`fmbook.zoopfl.zo`; ``B q`` more
   queries for random directions, ``2 B (k + m)`` for coordinates);
4. the chain rule through the white-box encoder: the surrogate ``mean_b <z_b, g_b>`` is
   back-propagated into ``E`` and ``e_c``, plus ``recon_weight`` times the reconstruction loss
   ``||D(z) - x||^2`` (which also trains ``D``);
5. the re-mapping ``R`` takes one ordinary gradient step on ``CE(R(o), y)`` (``o`` is a constant).

The paper states the parts but not these details; **our choices**: the zeroth-order estimate lives
in the latent ``z`` (that is what makes the auto-encoder "cut computation": ``k + m`` dimensions
instead of the input's), the decoder is trained by reconstruction only, the first
``warmup_rounds`` rounds train the auto-encoder by reconstruction alone (federated, no queries),
and the query budget is split evenly over the remaining rounds.

Methods (:data:`METHODS`), all with the same clients and the same per-client query budget:

* ``zero_shot``: the black box alone, raw inputs, no training;
* ``remap_local``: re-mapping only, trained on the black box's outputs for the raw training inputs
  (one query per training example, cached on the client), nothing shared;
* ``remap_fedavg``: the same re-mapping, averaged by FedAvg every round (one shared map);
* ``zoopfl``: surgery + zeroth-order + re-mapping;
* ``zoopfl_no_ae``: no auto-encoder: zeroth-order on the raw input, a learnable additive input
  perturbation ``delta`` (:class:`~fmbook.zoopfl.surgery.InputPrompt`) + re-mapping;
* ``zoopfl_no_embed``: no client embedding (``m = 0``);
* ``zoopfl_no_remap``: re-mapping fixed at the identity.

State: every trainable tensor is a named NumPy array (``ae.*``, ``prompt.*``, ``embedding.*``,
``remap.*``) plus two client-only bookkeeping arrays (``counter.queries``: training queries so far;
``cache.outputs``: cached black-box outputs of the re-mapping baselines). :func:`share_patterns`
says which names go to the server.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fmbook.zoopfl.blackbox import BlackBox, QueryBudgetExceeded, ZooPFLError
from fmbook.zoopfl.surgery import ClientEmbedding, InputPrompt, ReMap, SurgeryAE
from fmbook.zoopfl.zo import ZOConfig, estimate

METHODS = ("zero_shot", "remap_local", "remap_fedavg", "zoopfl", "zoopfl_no_ae", "zoopfl_no_embed",
           "zoopfl_no_remap")
METHOD_LABELS = {
    "zero_shot": "black box alone (zero-shot)",
    "remap_local": "local re-mapping only",
    "remap_fedavg": "FedAvg of the re-mapping",
    "zoopfl": "ZooPFL",
    "zoopfl_no_ae": "ZooPFL without auto-encoder (ZO on the raw input)",
    "zoopfl_no_embed": "ZooPFL without client embeddings",
    "zoopfl_no_remap": "ZooPFL without re-mapping",
}
SHARE_GROUPS = ("encoder", "decoder", "embedding", "prompt", "remap")
_GROUP_PATTERNS = {"encoder": "ae.encoder.*", "decoder": "ae.decoder.*", "embedding": "embedding.*",
                   "prompt": "prompt.*", "remap": "remap.*"}
ALWAYS_LOCAL = ("counter.*", "cache.*")


def check_method(name: str) -> str:
    if name not in METHODS:
        raise ZooPFLError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return name


@dataclass(frozen=True)
class ZooPFLConfig:
    """Hyperparameters of one method's local training (all **our choices**: the paper's were not
    available to us; sizes are set so that zeroth-order training is affordable on a CPU).

    ``share``: which parameter groups (:data:`SHARE_GROUPS`) the server averages; the rest stays on
    the client. Default: the auto-encoder (or the input prompt) is shared, the client embedding and
    the re-mapping are personal.
    """

    method: str = "zoopfl"
    bottleneck: int = 16  # k: encoder output size
    embed_dim: int = 4  # m: client embedding size (0 = no embedding)
    hidden: int = 128  # hidden width of the encoder and decoder MLPs
    zo: ZOConfig = field(default_factory=ZOConfig)
    query_budget: int = 4000  # training queries per client for the whole run
    rounds: int = 11  # federated rounds (including the warm-up rounds)
    warmup_rounds: int = 3  # rounds of reconstruction-only AE training (no queries)
    batch_size: int = 16  # examples per zeroth-order step
    lr_surgery: float = 2e-3  # Adam, encoder / embedding / input prompt
    lr_remap: float = 0.05  # Adam, re-mapping
    recon_weight: float = 1.0  # weight of the reconstruction loss during zeroth-order steps
    recon_epochs: int = 40  # reconstruction epochs per warm-up round (no queries: cheap)
    recon_batch_size: int = 32  # batch of the reconstruction epochs
    remap_epochs: int = 5  # re-mapping epochs per round over the outputs the client holds
    share: tuple[str, ...] = ("encoder", "decoder", "prompt")
    surgery_output: str = "sigmoid"  # sigmoid: images in [0, 1]; linear: embeddings (text black boxes)

    def __post_init__(self) -> None:
        check_method(self.method)
        object.__setattr__(self, "share", tuple(self.share))
        bad = [g for g in self.share if g not in SHARE_GROUPS]
        if bad:
            raise ZooPFLError(f"unknown share group(s) {bad}; allowed: {', '.join(SHARE_GROUPS)}")
        if isinstance(self.zo, dict):
            object.__setattr__(self, "zo", ZOConfig(**self.zo))
        for name in ("bottleneck", "hidden", "rounds", "batch_size", "query_budget"):
            if getattr(self, name) < 1:
                raise ZooPFLError(f"ZooPFLConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim < 0 or not 0 <= self.warmup_rounds <= self.rounds:
            raise ZooPFLError(f"need embed_dim >= 0 and 0 <= warmup_rounds <= rounds; got embed_dim={self.embed_dim}, "
                              f"warmup_rounds={self.warmup_rounds}, rounds={self.rounds}")

    # --- derived ------------------------------------------------------------------------------
    @property
    def uses_ae(self) -> bool:
        return self.method in ("zoopfl", "zoopfl_no_embed", "zoopfl_no_remap")

    @property
    def uses_zo(self) -> bool:
        return self.method.startswith("zoopfl")

    @property
    def trains_remap(self) -> bool:
        return self.method not in ("zero_shot", "zoopfl_no_remap")

    @property
    def client_embed_dim(self) -> int:
        return 0 if self.method == "zoopfl_no_embed" else self.embed_dim

    @property
    def zo_rounds(self) -> int:
        return self.rounds - self.warmup_rounds if self.uses_ae else self.rounds

    def for_method(self, method: str) -> "ZooPFLConfig":
        share = self.share
        if method == "remap_fedavg":
            share = tuple(dict.fromkeys(share + ("remap",)))
        elif method == "remap_local":
            share = tuple(g for g in share if g != "remap")
        return replace(self, method=check_method(method), share=share)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["share"] = list(self.share)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZooPFLConfig":
        data = dict(data)
        data["zo"] = ZOConfig(**data.get("zo", {}))
        data["share"] = tuple(data.get("share", ()))
        return cls(**data)


def share_patterns(config: ZooPFLConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(shared, local)`` fnmatch patterns for :class:`fmbook.core.fl.SharePolicy`."""
    shared = tuple(_GROUP_PATTERNS[g] for g in config.share)
    local = tuple(_GROUP_PATTERNS[g] for g in SHARE_GROUPS if g not in config.share) + ALWAYS_LOCAL
    return shared, local


# --------------------------------------------------------------------------- the model

class ClientModel:
    """The trainable parts of one method for one client, built from / written to a named state."""

    def __init__(self, config: ZooPFLConfig, input_shape: Sequence[int], num_outputs: int, num_classes: int) -> None:
        self.config = config
        self.input_shape = tuple(input_shape)
        self.ae = (SurgeryAE(input_shape, config.bottleneck, config.client_embed_dim, config.hidden,
                             config.surgery_output) if config.uses_ae else None)
        self.embedding = ClientEmbedding(config.client_embed_dim) if self.ae is not None and config.client_embed_dim else None
        clamp = (0.0, 1.0) if config.surgery_output == "sigmoid" else None
        self.prompt = InputPrompt(input_shape, clamp) if config.method == "zoopfl_no_ae" else None
        self.remap = ReMap(num_outputs, num_classes)

    def modules(self) -> dict[str, torch.nn.Module]:
        parts = {"ae": self.ae, "embedding": self.embedding, "prompt": self.prompt, "remap": self.remap}
        return {k: v for k, v in parts.items() if v is not None}

    def state(self) -> dict[str, np.ndarray]:
        return {f"{prefix}.{name}": t.detach().cpu().numpy().copy()
                for prefix, module in self.modules().items() for name, t in module.state_dict().items()}

    def load(self, state: dict[str, np.ndarray]) -> None:
        for prefix, module in self.modules().items():
            own = module.state_dict()
            module.load_state_dict({name: torch.as_tensor(np.asarray(state[f"{prefix}.{name}"])).reshape(own[name].shape)
                                    for name in own})

    # --- the path through the black box -------------------------------------------------------
    def embedding_vector(self) -> torch.Tensor | None:
        return self.embedding() if self.embedding is not None else None

    def surgery(self, x: torch.Tensor) -> torch.Tensor:
        """What the black box sees for inputs ``x`` (no surgery: ``x`` itself)."""
        if self.ae is not None:
            return self.ae(x, self.embedding_vector())
        if self.prompt is not None:
            return self.prompt(x)
        return x

    @torch.no_grad()
    def predict(self, blackbox: BlackBox, x: torch.Tensor) -> np.ndarray:
        logits = self.remap(blackbox.query_tensor(self.surgery(x)))
        return logits.argmax(1).numpy()


def initial_state(config: ZooPFLConfig, input_shape: Sequence[int], num_outputs: int, num_classes: int,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """The common starting state of every client (the server's initial model), deterministic in ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClientModel(config, input_shape, num_outputs, num_classes)
    state = model.state()
    state["counter.queries"] = np.zeros(1, np.int64)
    state["cache.outputs"] = np.zeros((0, num_outputs), np.float32)
    return state


def _generator(*keys: Any) -> torch.Generator:
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % (2**63))


def step_cost(config: ZooPFLConfig, latent_dim: int, batch: int, per_example: bool = True) -> int:
    """Queries one zeroth-order step costs: the base pass of the batch plus the estimate's points
    (``q`` for random directions, ``2 d`` for coordinates), each point a pass of the batch.

    ``per_example``: one estimate per example in the latent (the auto-encoder); otherwise one
    estimate of the batch's mean loss (the input prompt). Both cost the same number of queries.
    """
    points = 2 * latent_dim if config.zo.estimator == "coordinate" else config.zo.q
    return batch * (points + 1)


def steps_per_round(config: ZooPFLConfig, latent_dim: int, batch: int, per_example: bool = True) -> tuple[int, int]:
    """``(steps, queries per step)`` of a zeroth-order round: the per-client budget split evenly over
    the zeroth-order rounds. A per-round budget that cannot pay for one step is refused
    (:class:`~fmbook.zoopfl.blackbox.QueryBudgetExceeded`)."""
    if config.zo_rounds < 1:
        raise ZooPFLError("no zeroth-order round left: warmup_rounds == rounds (a warm-up-only run)")
    per_round = config.query_budget // config.zo_rounds
    cost = step_cost(config, latent_dim, batch, per_example)
    if per_round < cost:
        raise QueryBudgetExceeded(
            f"query_budget={config.query_budget} gives {per_round} queries per round over {config.zo_rounds} "
            f"zeroth-order rounds, smaller than one {config.zo.estimator} estimate needs ({cost} queries: "
            f"dimension {latent_dim}, q={config.zo.q}, batch {batch}); raise query_budget or lower q, "
            "batch_size or rounds")
    return per_round // cost, cost


def fit_round(config: ZooPFLConfig, state: dict[str, np.ndarray], blackbox: BlackBox, x: np.ndarray,
              y: np.ndarray, round_: int, seed: int, client: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One round of local training of ``config.method`` for one client; returns the new state and
    metrics (``queries`` used this round, ``steps``, ``loss``, ``recon``)."""
    model = ClientModel(config, x.shape[1:], blackbox.num_outputs, int(state["remap.linear.weight"].shape[0]))
    model.load(state)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    gen = _generator(seed, client, round_)
    used_before = int(np.asarray(state["counter.queries"]).sum())
    blackbox.reset_counts()
    blackbox.set_budget(max(1, config.query_budget - used_before))
    metrics: dict[str, float] = {"steps": 0.0, "loss": float("nan"), "recon": float("nan")}
    out_state = dict(state)
    method = config.method
    if method == "zero_shot":
        pass
    elif method in ("remap_local", "remap_fedavg"):
        cache = np.asarray(state["cache.outputs"])
        if cache.shape[0] != len(x):
            cache = blackbox.query(xt)
            out_state["cache.outputs"] = cache.astype(np.float32)
        metrics.update(_train_remap(model.remap, torch.as_tensor(cache), yt, config, gen))
    elif config.uses_ae and round_ <= config.warmup_rounds:
        metrics.update(_train_reconstruction(model, xt, config, gen))
    else:
        metrics.update(_zo_round(model, blackbox, xt, yt, config, gen))
    used = blackbox.queries
    blackbox.set_budget(None)
    out_state.update(model.state())
    out_state["counter.queries"] = np.array([used_before + used], np.int64)
    metrics["queries"] = float(used)
    return out_state, metrics


def _train_remap(remap: ReMap, outputs: torch.Tensor, y: torch.Tensor, config: ZooPFLConfig,
                 gen: torch.Generator) -> dict[str, float]:
    opt = torch.optim.Adam(remap.parameters(), lr=config.lr_remap)
    loss = torch.zeros(())
    for _ in range(config.remap_epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = F.cross_entropy(remap(outputs[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"loss": loss.item()}


def _train_reconstruction(model: ClientModel, x: torch.Tensor, config: ZooPFLConfig,
                          gen: torch.Generator) -> dict[str, float]:
    params = list(model.ae.parameters()) + (list(model.embedding.parameters()) if model.embedding else [])
    opt = torch.optim.Adam(params, lr=config.lr_surgery)
    loss = torch.zeros(())
    for _ in range(config.recon_epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), config.recon_batch_size):
            idx = order[start:start + config.recon_batch_size]
            loss = model.ae.reconstruction_loss(x[idx], model.embedding_vector())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"recon": loss.item()}


def _zo_round(model: ClientModel, blackbox: BlackBox, x: torch.Tensor, y: torch.Tensor, config: ZooPFLConfig,
              gen: torch.Generator) -> dict[str, float]:
    batch = min(config.batch_size, len(x))
    if model.ae is not None:
        latent_dim = model.ae.latent_dim
        params = list(model.ae.encoder.parameters()) + list(model.ae.decoder.parameters())
        params += list(model.embedding.parameters()) if model.embedding is not None else []
    else:  # the input prompt: one shared perturbation, the estimate is for the batch's mean loss
        latent_dim = model.prompt.latent_dim
        params = list(model.prompt.parameters())
    steps, _ = steps_per_round(config, latent_dim, batch, per_example=model.ae is not None)
    opt = torch.optim.Adam(params, lr=config.lr_surgery)
    opt_remap = torch.optim.Adam(model.remap.parameters(), lr=config.lr_remap)
    losses, recons, seen_out, seen_y = [], [], [], []
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=gen)[:batch]
        xb, yb = x[idx], y[idx]
        if model.ae is not None:
            z = model.ae.latent(xb, model.embedding_vector())
            z0 = z.detach()
            with torch.no_grad():
                base_out = blackbox.query_tensor(model.ae.decode(z0))
                f0 = F.cross_entropy(model.remap(base_out), yb, reduction="none")

            def loss_fn(points: torch.Tensor) -> torch.Tensor:  # (M, B, d) -> (M, B)
                m = points.shape[0]
                out = blackbox.query_tensor(model.ae.decode(points).reshape(m * batch, *model.input_shape))
                logits = model.remap(out)
                return F.cross_entropy(logits, yb.repeat(m), reduction="none").reshape(m, batch)

            g = estimate(loss_fn, z0, config.zo, gen, f0=f0)
            recon = torch.mean((model.ae.decode(z) - xb) ** 2)
            surrogate = (z * g).sum(1).mean() + config.recon_weight * recon
            recons.append(recon.item())
        else:
            delta0 = model.prompt.delta.detach().reshape(-1)
            with torch.no_grad():
                base_out = blackbox.query_tensor(model.prompt(xb))
                f0 = F.cross_entropy(model.remap(base_out), yb).reshape(1)

            def loss_fn(points: torch.Tensor) -> torch.Tensor:  # (M, D) -> (M,)
                m = points.shape[0]
                inputs = model.prompt.apply_delta(xb, points).reshape(m * batch, *model.input_shape)
                logits = model.remap(blackbox.query_tensor(inputs))
                return F.cross_entropy(logits, yb.repeat(m), reduction="none").reshape(m, batch).mean(1)

            g = estimate(loss_fn, delta0, config.zo, gen, f0=f0)
            surrogate = (model.prompt.delta.reshape(-1) * g).sum()
        opt.zero_grad()
        surrogate.backward()
        opt.step()
        losses.append(float(f0.mean()))
        seen_out.append(base_out)
        seen_y.append(yb)
        if config.trains_remap:
            loss_r = F.cross_entropy(model.remap(base_out), yb)
            opt_remap.zero_grad()
            loss_r.backward()
            opt_remap.step()
    if config.trains_remap and seen_out:  # the outputs of this round, already paid for: more epochs
        _train_remap(model.remap, torch.cat(seen_out), torch.cat(seen_y), config, gen)
    return {"steps": float(steps), "loss": float(np.mean(losses)) if losses else float("nan"),
            "recon": float(np.mean(recons)) if recons else float("nan")}


@torch.no_grad()
def evaluate(config: ZooPFLConfig, state: dict[str, np.ndarray], blackbox: BlackBox, x: np.ndarray,
             y: np.ndarray) -> dict[str, float]:
    """Accuracy of the client's model (queries counted in the ``eval`` phase, outside the budget)."""
    model = ClientModel(config, x.shape[1:], blackbox.num_outputs, int(state["remap.linear.weight"].shape[0]))
    model.load(state)
    xt = torch.as_tensor(x, dtype=torch.float32)
    with blackbox.phase("eval"):
        pred = model.predict(blackbox, xt)
    out = {"accuracy": float((pred == np.asarray(y)).mean()) if len(y) else float("nan"),
           "queries": float(np.asarray(state["counter.queries"]).sum())}
    if model.ae is not None:
        out["recon"] = float(model.ae.reconstruction_loss(xt, model.embedding_vector()))
    return out
