"""Embedded RLBench tasks. Importing this package registers every task in :data:`base.TASKS`."""

from sim_bridge.tasks import push_buttons  # noqa: F401
from sim_bridge.tasks.base import TASKS, Task, Waypoint, make_task

__all__ = ["TASKS", "Task", "Waypoint", "make_task"]
