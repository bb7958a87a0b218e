"""The ``recognized_action`` payload (ROS-free): JSON in a std_msgs/String, validated on the way in."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from mirror_common.errors import MirrorError
from mirror_common.serialization import parse_message


class RecognitionMessageError(MirrorError, ValueError):
    """A ``recognized_action`` message that is not the documented JSON object."""


@dataclass(frozen=True)
class RecognizedAction:
    instruction: str  # the best instruction ("" when there was nothing to recognise)
    score: float  # its cosine similarity
    top_k: list[tuple[str, float]] = field(default_factory=list)  # best first
    final: bool = False  # True: the decision over the whole demonstration
    frames: int = 0  # frames the decision saw (before sampling to the clip length)
    stamp: float = 0.0  # seconds: the stamp of the newest frame used
    episode: int = 0  # the bridge's episode whose demonstration this is

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RecognizedAction:
        raw = parse_message(cls, text, "recognized_action", RecognitionMessageError)

        def number(name: str) -> float:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RecognitionMessageError(
                    f"recognized_action {name!r} must be a finite number, got {value!r}"
                )
            return float(value)

        def integer(name: str) -> int:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RecognitionMessageError(
                    f"recognized_action {name!r} must be an integer >= 0, got {value!r}"
                )
            return value

        if not isinstance(raw["instruction"], str) or not isinstance(raw["final"], bool):
            raise RecognitionMessageError("recognized_action needs a string 'instruction' and a bool 'final'")
        top_k = raw["top_k"]
        if not isinstance(top_k, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
            and isinstance(p[1], (int, float)) and not isinstance(p[1], bool)
            for p in top_k
        ):  # fmt: skip
            raise RecognitionMessageError(
                f"recognized_action 'top_k' must be [[instruction, score], ...], got {top_k!r}"
            )
        return cls(
            instruction=raw["instruction"],
            score=number("score"),
            top_k=[(name, float(score)) for name, score in top_k],
            final=raw["final"],
            frames=integer("frames"),
            stamp=number("stamp"),
            episode=integer("episode"),
        )
