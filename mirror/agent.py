"""Run-time use of a trained :class:`~mirror.model.MirrorModel`: the next keyframe for an
observation and an instruction (embodied execution), the instruction a video shows (action understanding),
and the representations u / e and their aligned images T_u u / T_e e (for alignment analysis).

Everything runs in eval mode without gradients, in float32 or (``precision``) under bf16 / fp16 autocast with
float32 weights, as in training. Language features and recognition text embeddings are cached per instruction:
the model is frozen here, so they never change.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mirror.model import MirrorModel
from mirror.precision import INFERENCE_PRECISIONS, precision_autocast
from mirror_perception.demonstration import Frames, demonstration_clip, recognize_demonstration
from mirror_perception.recognition import InstructionRecognizer
from mirror_policy.arp.preprocessing import make_batch
from sim_bridge.actions import MAX_KEYFRAMES, KeyframeAction
from sim_bridge.observation import Observation

__all__ = ["MirrorAgent"]


class MirrorAgent:
    """A trained mirror model behind a small numpy-in / numpy-out interface."""

    def __init__(
        self, model: MirrorModel, device: str = "cpu", precision: str = "fp32", coarse_prior: float = 0.0
    ) -> None:
        """``coarse_prior``: how much ARP's coarse stage weighs in where the keyframe lands (0, as trained:
        the fine stage alone; see :meth:`~mirror_policy.arp.modeling.ARPPolicy.predict`)."""
        if precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"precision must be one of {INFERENCE_PRECISIONS}, got {precision!r}")
        if coarse_prior < 0:
            raise ValueError(f"coarse_prior must be >= 0, got {coarse_prior}")
        self.device = torch.device(device)
        self.precision = precision
        self.coarse_prior = coarse_prior
        self.model = model.to(self.device).eval()
        self.config = model.config
        self._language: dict[str | None, tuple[Tensor, Tensor]] = {}
        self._recognizers: dict[tuple[str, ...], InstructionRecognizer] = {}

    @classmethod
    def from_pretrained(
        cls, directory: Path | str, device: str = "cpu", precision: str = "fp32", coarse_prior: float = 0.0
    ) -> MirrorAgent:
        """Load a checkpoint written by ``MirrorModel.save_pretrained`` (or by ``train_joint``)."""
        return cls(
            MirrorModel.from_pretrained(directory, map_location=device), device, precision, coarse_prior
        )

    def _autocast(self) -> AbstractContextManager:
        return precision_autocast(self.precision, self.device)

    # --------------------------------------------------------------------------- embodied execution
    @torch.no_grad()
    def _language_of(self, instruction: str | None) -> tuple[Tensor, Tensor]:
        if instruction is None:  # instruction-blind: the text of nothing
            if None not in self._language:
                self._language[None] = self.model.language_features([""], allow_empty=True)
            return self._language[None]
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        if instruction not in self._language:
            self._language[instruction] = self.model.language_features([instruction])
        return self._language[instruction]

    def act(
        self,
        observation: Observation,
        instruction: str | None,
        step: int,
        episode_length: int = MAX_KEYFRAMES,
    ) -> tuple[KeyframeAction, np.ndarray]:
        """The next keyframe for ``observation`` under ``instruction`` at keyframe ``step`` (0-based, used
        for ARP's time feature), and the embodied representation e ``(arp.embed_dim,)``. ``instruction``
        None: instruction-blind (the language input of an empty text), the control of ``evaluate``.

        Raises ``PolicyInputError`` for a missing camera or wrong image size and ``InvalidActionError`` if
        the decoded action were malformed.
        """
        action, e, _ = self.predict(observation, instruction, step, episode_length)
        return action, e

    @torch.no_grad()
    def predict(
        self,
        observation: Observation,
        instruction: str | None,
        step: int,
        episode_length: int = MAX_KEYFRAMES,
    ) -> tuple[KeyframeAction, np.ndarray, np.ndarray]:
        """:meth:`act` with ARP's coarse-stage point ``(3,)`` (world, metres) as a third value: the point its
        fine stage zoomed in on, which decides which object a keyframe goes to (``keyframe_errors``)."""
        lang, mask = self._language_of(instruction)
        batch = make_batch(
            [observation], self.model.arp.config, lang, mask, [step], episode_length=episode_length
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self._autocast():
            prediction = self.model.arp.predict(batch, self.coarse_prior)
        action = KeyframeAction.from_vector(prediction.action[0].double().cpu().numpy())
        coarse = prediction.coarse_position[0].double().cpu().numpy()
        return action, prediction.e[0].float().cpu().numpy(), coarse

    # -------------------------------------------------------------------------- action understanding
    def recognizer(self, instructions: Sequence[str] | None = None) -> InstructionRecognizer:
        """The (cached) recognizer over ``instructions``, by default the training vocabulary."""
        vocabulary = tuple(self.config.instructions if instructions is None else instructions)
        if not vocabulary:
            raise ValueError("no instructions to recognise among: the model's vocabulary is empty")
        if vocabulary not in self._recognizers:
            self._recognizers[vocabulary] = InstructionRecognizer(
                self.model.viclip, self.model.tokenizer, vocabulary
            )
        return self._recognizers[vocabulary]

    @torch.no_grad()
    def recognize(
        self,
        frames: Frames,
        top_k: int = 5,
        instructions: list[str] | None = None,
        probabilities: bool = False,
    ) -> list[tuple[str, float]]:
        """The ``top_k`` instructions a whole demonstration from the model's video camera (``(T, H, W, 3)``
        uint8, a list of frames or a lazy :class:`~mirror_perception.demonstration.FrameSource`) most likely
        shows, best first, with cosine similarity scores (or softmax probabilities over the vocabulary at
        ViCLIP's temperature with ``probabilities=True``): :func:`~mirror_perception.demonstration.
        recognize_demonstration`, the path the perception node and ``evaluate`` share.
        """
        recognizer = self.recognizer(instructions)
        with self._autocast():
            return recognize_demonstration(recognizer, frames, top_k, probabilities)

    # ------------------------------------------------------------------------------ representations
    @torch.no_grad()
    def video_embedding(self, frames: Frames) -> np.ndarray:
        """u, ViCLIP's (unnormalised) video feature ``(viclip.embed_dim,)`` of a whole demonstration."""
        clip = demonstration_clip(frames, self.config.clip_frames)
        with self._autocast():
            u = self.model.viclip.video_features(clip[None])
        return u[0].float().cpu().numpy()

    @torch.no_grad()
    def aligned_embeddings(self, u: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(T_u u, T_e e)`` L2-normalised, for one pair (1-D inputs) or a batch (2-D inputs)."""
        u_t = torch.as_tensor(np.asarray(u, dtype=np.float32), device=self.device)
        e_t = torch.as_tensor(np.asarray(e, dtype=np.float32), device=self.device)
        single = u_t.dim() == 1 and e_t.dim() == 1
        if single:
            u_t, e_t = u_t[None], e_t[None]
        alignment = self.model.alignment
        if u_t.dim() != 2 or u_t.shape[1] != alignment.u_dim:
            raise ValueError(
                f"u must have shape ({alignment.u_dim},) or (B, {alignment.u_dim}), got {np.shape(u)}"
            )
        if e_t.dim() != 2 or e_t.shape[1] != alignment.e_dim:
            raise ValueError(
                f"e must have shape ({alignment.e_dim},) or (B, {alignment.e_dim}), got {np.shape(e)}"
            )
        z_u = F.normalize(alignment.t_u(u_t), dim=-1).cpu().numpy()
        z_e = F.normalize(alignment.t_e(e_t), dim=-1).cpu().numpy()
        return (z_u[0], z_e[0]) if single else (z_u, z_e)
