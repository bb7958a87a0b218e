"""What the ROS 2 end-to-end tests share: waiting for a condition, a module's ROS environment, and a
test-side client node spun by a background thread.

rclpy is imported inside the functions, so that importing this module costs nothing for ROS-free tests.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def require_module(name: str) -> Any:
    """The module ``name``; where it is missing the test module is skipped, except under ``CI=true``: there
    the test command has installed every extra, so a missing one is a broken install and fails."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is truthy; an AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by processes started meanwhile), restoring the old ones after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class SpinningClient:
    """A test-side node in its own context on ``domain_id``. Subclasses create their subscriptions and
    publishers on ``self.node`` (bridge statuses go to ``self.statuses``), then call
    :meth:`start_spinning`."""

    def __init__(self, name: str, domain_id: int) -> None:
        import rclpy

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.statuses: list[Any] = []

    def start_spinning(self) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._spinning:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._spinning = False  # stop and join the spin thread before shutting the context down
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    @property
    def status(self) -> Any:
        """The latest episode status received."""
        return self.statuses[-1]
