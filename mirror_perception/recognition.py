"""Recognising which instruction a video shows, by nearest text embedding (the paper's AU evaluation)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .clip_sampling import sample_clip_indices
from .errors import InvalidVideoError
from .modeling_viclip import ViCLIP
from .tokenizer import ClipTokenizer

__all__ = ["InstructionRecognizer", "sample_clip_indices"]


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (no masking, no drop-path) and restore the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class InstructionRecognizer:
    """Scores a clip against a fixed set of instructions.

    Text embeddings of all instructions are computed once and cached: the set is fixed and the text tower
    changes slowly (frozen upstream, 5% learning rate in the paper), so a video costs one video forward.
    Call `refresh()` after the text tower has been trained further.
    """

    def __init__(
        self, model: ViCLIP, tokenizer: ClipTokenizer, instructions: Iterable[str], batch_size: int = 64
    ) -> None:
        instructions = list(instructions)
        if not instructions:
            raise ValueError("need at least one instruction")
        if any(not isinstance(s, str) or not s.strip() for s in instructions):
            raise ValueError("instructions must be non-empty strings")
        duplicates = sorted({s for s in instructions if instructions.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate instructions: {duplicates}")
        self.model = model
        self.tokenizer = tokenizer
        self.instructions: tuple[str, ...] = tuple(instructions)
        self.batch_size = batch_size
        self.text_embeds = self._embed_instructions()

    @torch.no_grad()
    def _embed_instructions(self) -> torch.Tensor:
        context = self.model.config.context_length
        chunks = []
        with _eval_mode(self.model):
            for start in range(0, len(self.instructions), self.batch_size):
                texts = self.instructions[start : start + self.batch_size]
                ids = self.tokenizer(texts, context_length=context)
                chunks.append(self.model.encode_text(ids))
        return torch.cat(chunks)

    def refresh(self) -> None:
        """Recompute the cached text embeddings from the current model weights."""
        self.text_embeds = self._embed_instructions()

    @torch.no_grad()
    def similarities(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Cosine similarity of each clip to each instruction, `(B, num_instructions)`.

        `frames` is one clip (`(T,H,W,3)` uint8 or `(T,3,S,S)` normalised float) or a batch of clips.
        """
        if not isinstance(frames, torch.Tensor | np.ndarray):
            raise InvalidVideoError(f"frames must be a tensor or numpy array, got {type(frames).__name__}")
        if frames.ndim == 4:
            frames = frames[None]
        with _eval_mode(self.model):
            video = self.model.encode_video(frames)
        return video @ self.text_embeds.to(video.device, video.dtype).t()

    def recognize_batch(
        self, frames: torch.Tensor | np.ndarray, top_k: int = 5, probabilities: bool = False
    ) -> list[list[tuple[str, float]]]:
        """Per clip, the `top_k` instructions with their scores, best first.

        Scores are cosine similarities, or with `probabilities=True` the softmax over all instructions
        of cos / temperature (ViCLIP's zero-shot demo output).
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        scores = self.similarities(frames)
        if probabilities:
            scores = (scores * self.model.logit_scale.to(scores.dtype)).softmax(dim=-1)
        values, indices = scores.topk(min(top_k, scores.shape[1]), dim=-1)
        return [
            [(self.instructions[i], float(v)) for v, i in zip(row_v.tolist(), row_i.tolist())]
            for row_v, row_i in zip(values, indices)
        ]

    def recognize(
        self, frames: torch.Tensor | np.ndarray, top_k: int = 5, probabilities: bool = False
    ) -> list[tuple[str, float]]:
        """The `top_k` (instruction, score) pairs for one clip; the first is the recognised instruction."""
        if isinstance(frames, torch.Tensor | np.ndarray) and frames.ndim == 5 and frames.shape[0] != 1:
            raise InvalidVideoError(
                f"recognize takes one clip, got a batch of {frames.shape[0]}; use recognize_batch"
            )
        return self.recognize_batch(frames, top_k=top_k, probabilities=probabilities)[0]
