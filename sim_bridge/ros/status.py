"""The episode status the bridge publishes on ``episode_status`` as JSON (ROS-free, shared by all nodes).

States: ``idle`` (no episode, or it was stopped), ``running`` (waiting for keyframe actions), ``demo``
(playing the scripted demonstration), ``executing`` (moving to a keyframe), ``success`` and ``failure``
(the episode ended; ``reason`` says why). ``step`` counts the keyframe actions executed in the episode.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from mirror_common.serialization import parse_message
from sim_bridge.ros.errors import MessageError

IDLE, RUNNING, DEMO, EXECUTING = "idle", "running", "demo", "executing"
SUCCESS, FAILURE = "success", "failure"
STATES: tuple[str, ...] = (IDLE, RUNNING, DEMO, EXECUTING, SUCCESS, FAILURE)
FINAL_STATES: tuple[str, ...] = (SUCCESS, FAILURE)

_TYPES = {"task": str, "variation": int, "instruction": str, "seed": int, "episode": int, "step": int,
          "state": str, "reason": str, "busy": bool, "stamp": float}  # fmt: skip


def _has_type(value: object, expected: type) -> bool:
    if expected is bool or isinstance(value, bool):  # JSON true/false must not pass as 1/0 or vice versa
        return expected is bool and isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


@dataclass(frozen=True)
class EpisodeStatus:
    task: str = ""
    variation: int = 0
    instruction: str = ""
    seed: int = -1
    episode: int = 0  # 1-based count of episodes started by this bridge; 0 before the first reset
    step: int = 0
    state: str = IDLE
    reason: str = ""
    busy: bool = False
    stamp: float = 0.0  # seconds (ROS time) when the status was published

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown episode state {self.state!r}; expected one of {STATES}")

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def with_(self, **changes: object) -> EpisodeStatus:
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EpisodeStatus:
        """Parse and validate a status message; a malformed one raises :class:`MessageError`."""
        values = parse_message(cls, text, "episode status", MessageError)
        for name, value in values.items():
            expected = _TYPES[name]
            if not _has_type(value, expected):
                raise MessageError(
                    f"episode status field {name!r} must be {expected.__name__}, got {value!r}"
                )
            values[name] = float(value) if expected is float else value
        try:
            return cls(**values)
        except ValueError as err:
            raise MessageError(str(err)) from err


@dataclass(frozen=True)
class ActionRejection:
    """The bridge's answer on ``keyframe_action_rejected`` to an action it did not execute, so the sender
    learns why instead of waiting: ``busy`` (it was resetting, playing a demo or executing an action) or
    ``no episode`` (none running to act in)."""

    reason: str
    message: str
    episode: int  # the bridge's episode count when the action arrived
    stamp: float  # seconds (ROS time) of the rejection

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ActionRejection:
        values = parse_message(cls, text, "action rejection", MessageError)
        for name, expected in (("reason", str), ("message", str), ("episode", int), ("stamp", float)):
            if not _has_type(values[name], expected):
                raise MessageError(f"action rejection field {name!r} must be {expected.__name__}")
        values["stamp"] = float(values["stamp"])
        return cls(**values)
