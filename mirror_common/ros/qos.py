"""The QoS profiles of every stream of the stack, so that publishers and subscribers of one topic always
agree (a best-effort subscriber never silently misses a reliable publisher's latched state)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def keep_last_qos(depth: int, reliable: bool = True, latched: bool = False) -> QoSProfile:
    """Keep the last ``depth`` messages; reliable or best effort; ``latched`` = transient local (late
    joiners get the publisher's last messages), else volatile. Every stream of the stack is one of these."""
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def sensor_qos() -> QoSProfile:
    """Camera streams: best effort, keep last 5, volatile (``qos_profile_sensor_data``)."""
    return keep_last_qos(5, reliable=False)


def command_qos() -> QoSProfile:
    """Commands (keyframe actions, target poses): reliable, keep last 10, volatile."""
    return keep_last_qos(10)


def latched_qos() -> QoSProfile:
    """State that late joiners need (instruction, episode status): reliable, transient local, last 1."""
    return keep_last_qos(1, latched=True)
