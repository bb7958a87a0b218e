"""Typed errors of the simulator layer, so that callers can fail one episode cleanly and carry on."""

from mirror_common.errors import MirrorError


class SimError(MirrorError):
    """Base class of every error the simulator raises on purpose."""


class InvalidActionError(SimError, ValueError):
    """The action vector is malformed: wrong length, NaN, a degenerate quaternion, out of the workspace."""


class PlanningError(SimError):
    """The target pose cannot be reached: no IK solution, or no collision-free path within the budget."""


class IKError(PlanningError):
    """Inverse kinematics found no joint configuration for the target pose."""


class UnknownTaskError(SimError, KeyError):
    """A task name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownVariationError(SimError, IndexError):
    """A variation index outside the task's range."""


class BackendUnavailableError(SimError, ImportError):
    """A simulator backend whose software is not installed (e.g. RLBench without CoppeliaSim)."""


class DatasetError(MirrorError):
    """A dataset folder or file that is missing, corrupt or not in the RLBench/PerAct layout."""


class UnsafePickleError(DatasetError):
    """A pickle asked for a class outside the allow-list; datasets must never execute code."""
