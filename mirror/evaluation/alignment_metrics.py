"""Alignment metric (paper Sec. 2.2): bidirectional Recall@1 of cosine nearest-neighbour retrieval between
``T_u u`` (video clips) and ``T_e e`` (the policy's representation at keyframe observations) on held-out
pairs. Pair ``i`` is a clip and one keyframe observation of the same episode; a retrieval is a hit when the
retrieved item shares the pair's key, for each of the paper's three positive-pair definitions (episode,
instruction, class)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from mirror.alignment import PAIRINGS, alignment_recall_at_1


class AlignmentHeads(Protocol):
    """What projects raw features into the shared space (``MirrorAgent`` is one)."""

    def aligned_embeddings(self, u: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class AlignmentPairs:
    """Aligned embeddings of held-out pairs; row ``i`` of ``z_u`` and ``z_e`` is one pair. The raw features
    ``u`` and ``e`` are kept so that other heads (a probe's) can project the same pairs again."""

    z_u: np.ndarray  # (N, D) T_u u, L2-normalised
    z_e: np.ndarray  # (N, D) T_e e, L2-normalised
    tasks: list[str] = field(default_factory=list)
    episodes: list[int] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    u: np.ndarray | None = None  # (N, viclip.embed_dim) raw video features
    e: np.ndarray | None = None  # (N, arp.embed_dim) raw embodied features

    @classmethod
    def project(
        cls,
        heads: AlignmentHeads,
        u: np.ndarray,
        e: np.ndarray,
        tasks: list[str],
        episodes: list[int],
        instructions: list[str],
        steps: list[int],
    ) -> AlignmentPairs:
        """Pairs of raw features ``u``, ``e`` (row by row) projected through ``heads``."""
        z_u, z_e = heads.aligned_embeddings(u, e)
        return cls(z_u, z_e, tasks, episodes, instructions, steps, u, e)

    def through(self, heads: AlignmentHeads) -> AlignmentPairs:
        """The same pairs projected through other heads (e.g. probed ones on the same frozen models)."""
        if self.u is None or self.e is None:
            raise ValueError("these pairs keep no raw features to project again")
        return AlignmentPairs.project(
            heads, self.u, self.e, self.tasks, self.episodes, self.instructions, self.steps
        )

    def __len__(self) -> int:
        return int(self.z_u.shape[0])

    def keys(self, pairing: str) -> list[Hashable]:
        """Each pair's key under a positive-pair definition (matching ``mirror.alignment``)."""
        if pairing == "episode":
            return list(zip(self.tasks, self.episodes))
        if pairing == "instruction":
            return list(self.instructions)
        if pairing == "class":
            return list(self.tasks)
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")


def retrieval_chance(keys: Sequence[Hashable]) -> float:
    """Expected Recall@1 of a random retrieval: the mean fraction of items sharing each row's key."""
    _, counts = np.unique(np.array([repr(k) for k in keys]), return_counts=True)
    return float(np.sum(counts.astype(np.float64) ** 2) / len(keys) ** 2)


def alignment_metrics(pairs: AlignmentPairs) -> dict:
    """Recall@1 (u->e, e->u, mean) and its chance level under every pairing; fractions in [0, 1]."""
    if len(pairs) == 0:
        raise ValueError("no alignment pairs")
    z_u, z_e = torch.from_numpy(pairs.z_u), torch.from_numpy(pairs.z_e)
    out: dict = {"pairs": len(pairs), "clips": len(set(zip(pairs.tasks, pairs.episodes)))}
    for pairing in PAIRINGS:
        keys = pairs.keys(pairing)
        recall = alignment_recall_at_1(z_u, z_e, keys)
        out[pairing] = {
            "u_to_e": recall.u_to_e,
            "e_to_u": recall.e_to_u,
            "mean": recall.mean,
            "chance": retrieval_chance(keys),
        }
    return out
