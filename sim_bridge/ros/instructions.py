"""Instructions on the wire (ROS-free): the checks every node applies to the text it receives, and the short
id that state messages carry instead of the text."""

from __future__ import annotations

import hashlib

from sim_bridge.ros.errors import MessageError


class InstructionError(MessageError):
    """An instruction refused by :func:`check_instruction`; ``kind`` names the check it failed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


MAX_INSTRUCTION_CHARS = 500  # RLBench's longest instruction is ~120; CLIP's text tower reads 77 tokens


def check_instruction(text: str) -> str:
    """``text`` stripped, or :class:`InstructionError` for one longer than :data:`MAX_INSTRUCTION_CHARS` or
    holding control characters. Receivers check every instruction; senders check before publishing, because
    rclpy silently cuts a string at its first NUL when it serialises it."""
    text = text.strip()
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InstructionError(
            "too long",
            f"instruction of {len(text)} characters refused (at most {MAX_INSTRUCTION_CHARS}): "
            f"{text[:60]!r}...",
        )
    bad = sorted({f"U+{ord(c):04X}" for c in text if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise InstructionError(
            "control characters", f"instruction with control characters {bad} refused: {text[:60]!r}"
        )
    return text


def instruction_id(text: str) -> str:
    """A short stable id of an instruction ("" for stand-by): state messages carry it instead of the text."""
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else ""
