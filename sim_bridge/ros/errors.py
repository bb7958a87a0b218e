"""Typed errors of the ROS 2 layer (ROS-free, so library code can raise and catch them without rclpy)."""

from mirror_common.errors import MirrorError


class MessageError(MirrorError, ValueError):
    """A ROS message that cannot be converted: wrong encoding, size, step, truncated data, NaN pose."""


class BridgeBusyError(MirrorError, RuntimeError):
    """A command arrived while the bridge was busy (resetting, playing a demo or executing an action)."""


class EpisodeStateError(MirrorError, RuntimeError):
    """A command that the current episode state does not allow (an action with no running episode, a demo
    after actions were executed)."""
