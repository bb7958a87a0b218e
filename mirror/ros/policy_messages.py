"""JSON payloads of the policy node's ``policy_state`` and ``policy_actions`` topics (ROS-free).

Both travel as std_msgs/String (custom interfaces need a build toolchain, DESIGN.md section 6) and are
validated on the way in, like the bridge's episode status. They name the instruction by its id
(:func:`sim_bridge.ros.messages.instruction_id`): the text travels once, on the latched ``instruction`` topic.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from mirror_common.serialization import parse_message
from sim_bridge.ros.errors import MessageError


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise MessageError(message)


@dataclass(frozen=True)
class PolicyState:
    """What the policy node is doing; republished (latched) whenever it changes."""

    ready: bool
    checkpoint: str
    vocabulary: list[str] = field(default_factory=list)
    instruction_id: str = ""  # id of the instruction it follows (messages.instruction_id); "" = stand-by
    known_instruction: bool = True  # whether the instruction is in the vocabulary
    episode: int = 0
    actions: int = 0  # keyframe actions published since the node started
    stamp: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PolicyState:
        values = parse_message(cls, text, "policy state", MessageError)
        _check(isinstance(values["ready"], bool), "policy state 'ready' must be a bool")
        _check(
            isinstance(values["known_instruction"], bool), "policy state 'known_instruction' must be a bool"
        )
        _check(
            isinstance(values["vocabulary"], list) and all(isinstance(s, str) for s in values["vocabulary"]),
            "policy state 'vocabulary' must be a list of strings",
        )
        for name in ("checkpoint", "instruction_id"):
            _check(isinstance(values[name], str), f"policy state {name!r} must be a string")
        for name in ("episode", "actions"):
            _check(isinstance(values[name], int) and not isinstance(values[name], bool),
                   f"policy state {name!r} must be an integer")  # fmt: skip
        _check(isinstance(values["stamp"], (int, float)), "policy state 'stamp' must be a number")
        values["stamp"] = float(values["stamp"])
        return cls(**values)


@dataclass(frozen=True)
class PolicyActionInfo:
    """One keyframe action the policy published and what it cost."""

    episode: int
    step: int
    instruction_id: (
        str  # messages.instruction_id of the instruction acted on (the text is on ``instruction``)
    )
    known_instruction: bool
    action: list[float]  # the 9-float RLBench action
    inference_ms: float  # MirrorAgent.act wall time
    latency_ms: float  # observation stamp -> action published
    observation_stamp: float  # seconds, the camera set's stamp

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PolicyActionInfo:
        values = parse_message(cls, text, "policy action info", MessageError)
        for name in ("episode", "step"):
            _check(isinstance(values[name], int) and not isinstance(values[name], bool),
                   f"policy action info {name!r} must be an integer")  # fmt: skip
        _check(
            isinstance(values["instruction_id"], str), "policy action info 'instruction_id' must be a string"
        )
        _check(isinstance(values["known_instruction"], bool), "'known_instruction' must be a bool")
        action = values["action"]
        _check(
            isinstance(action, list)
            and len(action) == 9
            and all(isinstance(v, (int, float)) for v in action),
            f"policy action info 'action' must be 9 numbers, got {action!r}",
        )
        values["action"] = [float(v) for v in action]
        for name in ("inference_ms", "latency_ms", "observation_stamp"):
            value = values[name]
            _check(isinstance(value, (int, float)) and math.isfinite(value),
                   f"policy action info {name!r} must be a finite number")  # fmt: skip
            values[name] = float(value)
        return cls(**values)
