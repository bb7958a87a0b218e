"""Mirror alignment: two linear heads and the bidirectional InfoNCE loss that tie ViCLIP's video feature
``u`` (action understanding) to ARP's last-block feature ``e`` (embodied execution).

Follows the paper (arXiv 2509.21136): Eq. 1 ``z_u = T_u(u)``, ``z_e = T_e(e)`` in a shared 1024-d space,
Eq. 3 cosine similarity, Eq. 2 the bidirectional InfoNCE loss with temperature ``tau``; the two directions
are **averaged** (the ``1/(2B)`` factor of Eq. 2, i.e. ``L = (L_u->e + L_e->u) / 2`` as supplement Eq. 19
states). Supplement Eq. 18/21 gives the mutual-information estimate ``I(z_u; z_e) >= log B - L``.

Positive pairs (paper Sec. 4.5): by *episode*, by *instruction* (default) or by *class* (task). Pairs are
drawn as the paper describes: each action-understanding (AU) sample is paired with one embodied-execution
(EE) sample drawn at random among those with the same key (:func:`pair_by_key`), so row ``i`` of a batch is
always a positive pair. A batch can still hold several rows with the same key (likely by instruction, certain
by class); treating those as negatives would push apart exactly what the pairing says belongs together. So,
when keys are given and ``same_key_positives`` is on (the default), every same-key (AU, EE) pair in the batch
is a positive and each row's loss is the mean negative log-likelihood over its positives (the multi-positive
InfoNCE of supervised contrastive learning, "L_out" form). With all keys distinct this is *exactly* Eq. 2;
with ``same_key_positives=False`` Eq. 2 is applied literally (only the diagonal is positive).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mirror_common.errors import MirrorError

PAIRINGS: tuple[str, ...] = ("episode", "instruction", "class")
# Cosine similarity divides by the norms; a zero vector must not yield NaN.
_NORM_EPS = 1e-12


class PairingError(MirrorError, LookupError):
    """An AU sample whose key has no EE sample to pair with (e.g. an instruction missing from one split)."""


@dataclass
class AlignmentConfig:
    """Mirror-alignment hyper-parameters (paper Sec. 4.1: Z in R^1024, tau 0.1, positives by instruction)."""

    shared_dim: int = 1024
    tau: float = 0.1
    pairing: str = "instruction"
    same_key_positives: bool = True

    def __post_init__(self) -> None:
        if self.shared_dim < 1:
            raise ValueError(f"shared_dim must be positive, got {self.shared_dim}")
        if not (self.tau > 0.0 and math.isfinite(self.tau)):
            raise ValueError(f"tau must be a positive finite number, got {self.tau}")
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")

    def model_dict(self) -> dict[str, int]:
        """The fields that shape the heads T_u, T_e; the rest only shape the loss, so heads move freely
        between configs that differ in them (a probe may train a model's heads with another pairing)."""
        return {"shared_dim": self.shared_dim}


@dataclass
class AlignmentOutput:
    """The alignment loss of one batch, its two directions and the shared-space embeddings."""

    loss: Tensor
    loss_u_to_e: Tensor
    loss_e_to_u: Tensor
    z_u: Tensor
    z_e: Tensor

    def mutual_information_lower_bound(self) -> float:
        """``log B - L_align`` (supplement Eq. 21), in nats."""
        return float(mutual_information_lower_bound(self.loss.detach(), self.z_u.shape[0]))


class MirrorAlignment(nn.Module):
    """``T_u`` and ``T_e``: linear maps of ``u`` and ``e`` into the shared space, trained with Eq. 2.

    Gradients flow through the heads into ``u`` and ``e``, so the same module serves alignment probing
    (frozen encoders, paper Sec. 2) and joint training (paper Sec. 3, Eq. 5).
    """

    def __init__(self, u_dim: int, e_dim: int, config: AlignmentConfig | None = None) -> None:
        super().__init__()
        if u_dim < 1 or e_dim < 1:
            raise ValueError(f"feature sizes must be positive, got u_dim={u_dim}, e_dim={e_dim}")
        self.config = config if config is not None else AlignmentConfig()
        self.u_dim = u_dim
        self.e_dim = e_dim
        self.t_u = nn.Linear(u_dim, self.config.shared_dim)
        self.t_e = nn.Linear(e_dim, self.config.shared_dim)

    def project(self, u: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 1: ``(z_u, z_e)`` from ``u`` (B, u_dim) and ``e`` (B, e_dim)."""
        _check_features(u, self.u_dim, "u")
        _check_features(e, self.e_dim, "e")
        if u.shape[0] != e.shape[0]:
            raise ValueError(
                f"u and e must hold the same number of samples, got {u.shape[0]} and {e.shape[0]}"
            )
        return self.t_u(u), self.t_e(e)

    def forward(
        self, u: Tensor, e: Tensor, keys: Sequence[Hashable] | Tensor | None = None
    ) -> AlignmentOutput:
        """Loss of a batch whose row ``i`` pairs ``u[i]`` with ``e[i]``; ``keys[i]`` is that pair's key."""
        z_u, z_e = self.project(u, e)
        positives = None
        if keys is not None and self.config.same_key_positives:
            positives = positive_mask(keys, device=z_u.device)
        l_ue, l_eu = info_nce_losses(z_u, z_e, self.config.tau, positives)
        return AlignmentOutput(0.5 * (l_ue + l_eu), l_ue, l_eu, z_u, z_e)


def _check_features(x: Tensor, dim: int, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (batch, {dim}), got {tuple(x.shape)}")


def cosine_similarity_matrix(z_u: Tensor, z_e: Tensor) -> Tensor:
    """Eq. 3 for every pair: ``S[i, j] = sim(z_u[i], z_e[j])``, shape (B_u, B_e)."""
    if z_u.dim() != 2 or z_e.dim() != 2 or z_u.shape[1] != z_e.shape[1]:
        raise ValueError(
            f"z_u and z_e must be (batch, dim) with equal dim, got {tuple(z_u.shape)}, {tuple(z_e.shape)}"
        )
    return F.normalize(z_u, dim=1, eps=_NORM_EPS) @ F.normalize(z_e, dim=1, eps=_NORM_EPS).T


def positive_mask(keys: Sequence[Hashable] | Tensor, device: torch.device | str | None = None) -> Tensor:
    """(B, B) bool matrix, True where rows ``i`` and ``j`` share a key (always True on the diagonal)."""
    if isinstance(keys, Tensor):
        if keys.dim() != 1:
            raise ValueError(f"key tensor must be 1-D, got shape {tuple(keys.shape)}")
        ids = keys.to(device)
    else:
        index: dict[Hashable, int] = {}
        ids = torch.tensor([index.setdefault(k, len(index)) for k in keys], dtype=torch.long, device=device)
    return ids[:, None] == ids[None, :]


def info_nce_losses(
    z_u: Tensor, z_e: Tensor, tau: float, positives: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The two directions of Eq. 2, ``(L_u->e, L_e->u)``, each averaged over the batch.

    ``positives`` is a (B, B) bool matrix (see :func:`positive_mask`); ``None`` means the diagonal only,
    which is Eq. 2 verbatim. A row with several positives scores the mean log-likelihood over them.
    """
    if not (tau > 0.0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a positive finite number, got {tau}")
    if z_u.shape[0] != z_e.shape[0] or z_u.shape[0] == 0:
        raise ValueError(f"need equally sized non-empty batches, got {z_u.shape[0]} and {z_e.shape[0]}")
    logits = cosine_similarity_matrix(z_u, z_e) / tau
    batch = logits.shape[0]
    if positives is None:
        target = torch.arange(batch, device=logits.device)
        return F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)
    if positives.shape != (batch, batch) or positives.dtype != torch.bool:
        raise ValueError(
            f"positives must be a ({batch}, {batch}) bool matrix, "
            f"got {positives.dtype} of shape {tuple(positives.shape)}"
        )
    if not bool(positives.diagonal().all()):
        raise ValueError("row i must be a positive pair with itself: the diagonal of positives must be True")
    weights = positives.to(logits.dtype)
    weights_u = weights / weights.sum(dim=1, keepdim=True)
    weights_e = weights.T / weights.T.sum(dim=1, keepdim=True)
    loss_ue = -(F.log_softmax(logits, dim=1) * weights_u).sum(dim=1).mean()
    loss_eu = -(F.log_softmax(logits.T, dim=1) * weights_e).sum(dim=1).mean()
    return loss_ue, loss_eu


def info_nce_loss(z_u: Tensor, z_e: Tensor, tau: float, positives: Tensor | None = None) -> Tensor:
    """Eq. 2: the bidirectional InfoNCE loss, the mean of its two directions."""
    loss_ue, loss_eu = info_nce_losses(z_u, z_e, tau, positives)
    return 0.5 * (loss_ue + loss_eu)


def mutual_information_lower_bound(loss: float | Tensor, batch_size: int) -> float | Tensor:
    """Supplement Eq. 18/21: ``I(z_u; z_e) >= log B - L`` (nats). Same type as ``loss``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return math.log(batch_size) - loss


# --- positive-pair keys and pairing -------------------------------------------------------------------------


class SampleIdentity(Protocol):
    """What a key function reads from a sample: its task (RLBench task name), episode and instruction."""

    task: str
    episode: int
    instruction: str


def episode_key(sample: SampleIdentity) -> tuple[str, int]:
    """By episode: same task and same episode (episode numbers restart in every task folder)."""
    return (sample.task, int(sample.episode))


def instruction_key(sample: SampleIdentity) -> str:
    """By instruction (paper default): the same canonical language instruction."""
    return sample.instruction


def class_key(sample: SampleIdentity) -> str:
    """By class: the same task, whatever its variation."""
    return sample.task


KEY_FUNCTIONS: dict[str, Callable[[SampleIdentity], Hashable]] = {
    "episode": episode_key,
    "instruction": instruction_key,
    "class": class_key,
}


def key_function(pairing: str) -> Callable[[SampleIdentity], Hashable]:
    """The key function of a pairing strategy ("episode", "instruction" or "class")."""
    if pairing not in KEY_FUNCTIONS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    return KEY_FUNCTIONS[pairing]


def index_by_key(keys: Sequence[Hashable]) -> dict[Hashable, np.ndarray]:
    """Sample positions grouped by key, in ascending order, so pairing never depends on dict order."""
    groups: dict[Hashable, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    return {key: np.asarray(positions, dtype=np.int64) for key, positions in groups.items()}


def pair_by_key(
    au_keys: Sequence[Hashable],
    ee_index: Mapping[Hashable, Sequence[int] | np.ndarray],
    rng: np.random.Generator | int,
) -> np.ndarray:
    """For each AU sample, the position of one EE sample drawn uniformly among those with the same key.

    ``rng`` is a numpy Generator or a seed; the same seed gives the same pairs.
    """
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    chosen = np.empty(len(au_keys), dtype=np.int64)
    for i, key in enumerate(au_keys):
        candidates = ee_index.get(key)
        if candidates is None or len(candidates) == 0:
            raise PairingError(f"AU sample {i} has key {key!r}, which no EE sample has")
        chosen[i] = int(candidates[int(generator.integers(len(candidates)))])
    return chosen


def pair_samples(
    au_samples: Sequence[SampleIdentity],
    ee_samples: Sequence[SampleIdentity],
    pairing: str,
    rng: np.random.Generator | int,
) -> tuple[np.ndarray, list[Hashable]]:
    """Pair every AU sample with an EE sample under ``pairing``; returns (EE positions, the pairs' keys)."""
    key_of = key_function(pairing)
    au_keys = [key_of(s) for s in au_samples]
    ee_index = index_by_key([key_of(s) for s in ee_samples])
    return pair_by_key(au_keys, ee_index, rng), au_keys


# --- evaluation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecallAtOne:
    """Bidirectional nearest-neighbour retrieval accuracy (paper Sec. 2.2), as fractions in [0, 1]."""

    u_to_e: float
    e_to_u: float

    @property
    def mean(self) -> float:
        return 0.5 * (self.u_to_e + self.e_to_u)


@torch.no_grad()
def alignment_recall_at_1(
    z_u: Tensor, z_e: Tensor, keys: Sequence[Hashable] | Tensor | None = None
) -> RecallAtOne:
    """Recall@1 of cosine nearest-neighbour retrieval, both ways, over paired embeddings.

    Row ``i`` of ``z_u`` and ``z_e`` form a pair. A retrieval is a hit when the retrieved item is that pair's
    partner or, with ``keys``, any item with the same key (the positive-pair definition used in training).
    """
    sims = cosine_similarity_matrix(z_u, z_e)
    n = sims.shape[0]
    if n == 0 or sims.shape[1] != n:
        raise ValueError(f"need equally sized non-empty sets, got {tuple(sims.shape)}")
    if keys is None:
        same = torch.eye(n, dtype=torch.bool, device=sims.device)
    else:
        if len(keys) != n:
            raise ValueError(f"got {len(keys)} keys for {n} pairs")
        same = positive_mask(keys, device=sims.device)
    rows = torch.arange(n, device=sims.device)
    hits_u = same[rows, sims.argmax(dim=1)]
    hits_e = same[sims.argmax(dim=0), rows]
    return RecallAtOne(float(hits_u.double().mean()), float(hits_e.double().mean()))
