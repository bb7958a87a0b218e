"""``sim_bridge`` ROS 2 node: streams the simulator's four RGB-D cameras and executes keyframe actions.

Threads: the executor (one thread, the caller's) handles subscriptions, services and parameters and only
enqueues commands; a :class:`~sim_bridge.ros.worker.SimWorker` thread owns the backend, runs the commands and
publishes the camera sets (``publish_rate`` Hz while idle, one per control tick while the arm moves).
Interface names: :mod:`sim_bridge.ros.topics`; status JSON: :mod:`sim_bridge.ros.status`.
``reset_episode`` answers once the new episode is set up (the executor waits meanwhile: ~0.2 s in
PyBullet); ``play_demo`` answers once the demo has started and reports its end on ``episode_status``.

    sim_bridge_node --ros-args -p task:=push_buttons -p variation:=0 -p publish_rate:=10.0

Parameters: ``task``, ``variation``, ``seed`` (-1: one more than the last episode's) take effect at the next
``reset_episode``; ``publish_rate``, ``max_steps``, ``action_timeout`` (a running episode fails when its next
action has not come for that long; 0: never) and ``idle_rerender`` at once; ``backend`` (bullet | rlbench) and
``reset_on_start`` are read at start-up. Invalid values are rejected with a reason.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock as RclpyClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from mirror_common.cli import console_main
from mirror_common.reasons import ReasonLog
from mirror_common.ros.node_runtime import run_node
from mirror_common.ros.qos import command_qos, keep_last_qos, latched_qos
from sim_bridge.errors import SimError
from sim_bridge.observation import Observation
from sim_bridge.ros.camera_publisher import CameraSetPublisher
from sim_bridge.ros.episode import BACKENDS, MAX_SEED, NEXT_SEED, make_backend, validate_episode_request
from sim_bridge.ros.errors import BridgeBusyError, MessageError
from sim_bridge.ros.messages import action_vector_from_message, ns_to_stamp, seconds, status_to_message
from sim_bridge.ros.status import ActionRejection, EpisodeStatus
from sim_bridge.ros.topics import (
    ACTION_REJECTED_TOPIC,
    EPISODE_STATUS_TOPIC,
    INSTRUCTION_TOPIC,
    KEYFRAME_ACTION_TOPIC,
    NODE_NAME,
    PARAM_ACTION_TIMEOUT,
    PARAM_BACKEND,
    PARAM_MAX_STEPS,
    PARAM_PUBLISH_RATE,
    PARAM_SEED,
    PARAM_TASK,
    PARAM_VARIATION,
    PLAY_DEMO_SERVICE,
    RESET_EPISODE_SERVICE,
    STOP_SERVICE,
)
from sim_bridge.ros.worker import MAX_PUBLISH_RATE, SimWorker, WorkerConfig

PARAM_RESET_ON_START = "reset_on_start"
PARAM_IDLE_RERENDER = "idle_rerender"
PARAM_PUBLISH_CLOCK = "publish_clock"
CLOCK_TOPIC = "/clock"
CLOCK_RATE = 100.0  # Hz of /clock messages with publish_clock
RESET_TIMEOUT = 120.0  # s a reset_episode call waits for the backend (CoppeliaSim loads scenes slowly)
DEMO_START_TIMEOUT = 30.0
REJECTION_LOG_PERIOD = (
    5.0  # s between log lines of one rejection reason (every rejection is answered on a topic)
)


def _descriptor(description: str, **extra: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, **extra)


def _parameter_descriptors() -> dict[str, tuple[Any, ParameterDescriptor]]:
    """Name -> (default, descriptor) of every parameter the node declares."""
    return {
        PARAM_TASK: ("push_buttons", _descriptor("RLBench task name of the next reset_episode")),
        PARAM_VARIATION: (0, _descriptor("variation index of the next reset_episode (0-based)")),
        PARAM_SEED: (
            0,
            _descriptor(
                "layout seed of the next reset_episode; -1 = one more than the last episode's seed",
                integer_range=[IntegerRange(from_value=NEXT_SEED, to_value=MAX_SEED, step=1)],
            ),
        ),
        PARAM_BACKEND: (
            "bullet",
            _descriptor(
                f"simulator backend, one of {BACKENDS} (rlbench needs CoppeliaSim)",
                read_only=True,
                additional_constraints=f"one of {BACKENDS}",
            ),
        ),
        PARAM_PUBLISH_RATE: (
            10.0,
            _descriptor(
                "Hz of camera sets while the arm is idle (while it moves: one set per 20 Hz control tick)",
                floating_point_range=[
                    FloatingPointRange(from_value=0.1, to_value=MAX_PUBLISH_RATE, step=0.0)
                ],
            ),
        ),
        PARAM_MAX_STEPS: (
            25,
            _descriptor(
                "keyframe actions per episode before it fails",
                integer_range=[IntegerRange(from_value=1, to_value=10_000, step=1)],
            ),
        ),
        PARAM_ACTION_TIMEOUT: (
            0.0,
            _descriptor(
                "s a running episode waits for its next keyframe action before it fails (0: forever)",
                floating_point_range=[FloatingPointRange(from_value=0.0, to_value=3600.0, step=0.0)],
            ),
        ),
        PARAM_RESET_ON_START: (True, _descriptor("start an episode from task/variation/seed at start-up")),
        PARAM_PUBLISH_CLOCK: (
            False,
            _descriptor(
                "publish simulated time on /clock (seconds since the bridge started), for nodes run with "
                "use_sim_time:=true; read at start-up",
                read_only=True,
            ),
        ),
        PARAM_IDLE_RERENDER: (
            False,
            _descriptor(
                "render every idle set; false re-publishes the scene rendered after the last command "
                "(nothing moves while idle)"
            ),
        ),
    }


class SimBridgeNode(Node):
    """The simulator bridge node (see the module docstring).

    Raises the backend's error if it cannot start, e.g. :class:`~sim_bridge.errors.BackendUnavailableError`
    for ``backend: rlbench`` without CoppeliaSim.
    """

    def __init__(
        self,
        *,
        context: rclpy.context.Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
        namespace: str | None = None,
    ) -> None:
        super().__init__(
            NODE_NAME, context=context, parameter_overrides=parameter_overrides, namespace=namespace
        )
        for name, (default, descriptor) in _parameter_descriptors().items():
            self.declare_parameter(name, default, descriptor)
        backend = self._param(PARAM_BACKEND)
        if backend not in BACKENDS:
            super().destroy_node()
            raise ValueError(f"parameter backend must be one of {BACKENDS}, got {backend!r}")

        self._cameras = CameraSetPublisher(self)
        self._status_pub = self.create_publisher(String, EPISODE_STATUS_TOPIC, latched_qos())
        self._instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
        self._rejection_pub = self.create_publisher(String, ACTION_REJECTED_TOPIC, command_qos())
        self._rejections = ReasonLog(logging.getLogger(NODE_NAME), REJECTION_LOG_PERIOD)
        self._instruction: str | None = None
        self._status_lock = threading.Lock()
        self._steady = RclpyClock(clock_type=ClockType.STEADY_TIME)
        # steady-clock ns at simulated time 0 when this bridge publishes /clock (sim time starts at 1 s)
        self._sim_origin: int | None = None
        if self._param(PARAM_PUBLISH_CLOCK):
            self._sim_origin = self._steady.now().nanoseconds - 1_000_000_000
        config = WorkerConfig(
            publish_rate=self._param(PARAM_PUBLISH_RATE),
            max_steps=self._param(PARAM_MAX_STEPS),
            action_timeout=self._param(PARAM_ACTION_TIMEOUT),
            idle_rerender=self._param(PARAM_IDLE_RERENDER),
        )
        self._worker = SimWorker(
            lambda: make_backend(backend), self._publish_set, self._publish_status, config
        )
        try:
            self._worker.start()
            self._check(self._current_parameters())
        except BaseException:
            self._worker.shutdown()
            super().destroy_node()
            raise

        if self._sim_origin is not None:
            self._start_clock()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_subscription(Float64MultiArray, KEYFRAME_ACTION_TOPIC, self._on_action, command_qos())
        self.create_service(Trigger, RESET_EPISODE_SERVICE, self._on_reset)
        self.create_service(Trigger, PLAY_DEMO_SERVICE, self._on_play_demo)
        self.create_service(Trigger, STOP_SERVICE, self._on_stop)
        self.get_logger().info(
            f"{backend} backend ready with {len(self._worker.catalog)} tasks; streaming at "
            f"{config.publish_rate:g} Hz"
        )
        if self._param(PARAM_RESET_ON_START):
            ok, message = self.reset_episode()
            if not ok:
                self.get_logger().error(f"start-up reset failed: {message}")

    def _start_clock(self) -> None:
        """Publish simulated time on /clock: seconds since start-up, from a steady clock (a timer on the
        node's own clock would wait for /clock forever under use_sim_time). It starts near zero, far from wall
        time, so a node that compared stamps with its wall clock instead of its ROS clock would fail."""
        publisher = self.create_publisher(Clock, CLOCK_TOPIC, keep_last_qos(1))

        def tick() -> None:
            publisher.publish(Clock(clock=self._stamp_now()))

        tick()
        self.create_timer(1.0 / CLOCK_RATE, tick, clock=self._steady)

    def _stamp_now(self) -> TimeMsg:
        """Now on the stack's clock, for stamps. When this bridge publishes /clock, that is the simulated time
        it publishes: its own ROS clock under use_sim_time reads 0 until its subscription hears the first
        tick, which stamped the first status and camera sets 0."""
        if self._sim_origin is None:
            return self.get_clock().now().to_msg()
        return ns_to_stamp(self._steady.now().nanoseconds - self._sim_origin)

    # -- public API (also used by the services) ------------------------------------------------------------
    @property
    def status(self) -> EpisodeStatus:
        return self._worker.status

    def reset_episode(self, timeout: float = RESET_TIMEOUT) -> tuple[bool, str]:
        """Start a new episode from the task/variation/seed parameters; waits until it is set up."""
        task, variation, seed = self._param(PARAM_TASK), self._param(PARAM_VARIATION), self._param(PARAM_SEED)
        try:
            ticket = self._worker.submit_reset(task, variation, seed)
        except (BridgeBusyError, RuntimeError) as err:
            return False, str(err)
        if not ticket.finished.wait(timeout):
            return False, f"reset still running after {timeout:.0f} s"
        return ticket.ok, ticket.message

    def destroy_node(self) -> None:
        """Stop and join the worker (closing the backend) before the node's publishers go away."""
        self._worker.shutdown()
        super().destroy_node()

    # -- parameters ----------------------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _current_parameters(self) -> dict[str, Any]:
        return {name: self._param(name) for name in _parameter_descriptors()}

    def _check(self, values: dict[str, Any]) -> None:
        validate_episode_request(
            self._worker.catalog, values[PARAM_TASK], values[PARAM_VARIATION], values[PARAM_SEED]
        )

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        values = self._current_parameters()
        values.update({p.name: p.value for p in parameters})
        try:
            self._check(values)
        except (SimError, ValueError, KeyError, IndexError) as err:
            reason = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
            self.get_logger().warning(f"parameter change rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        for p in parameters:
            if p.name == PARAM_PUBLISH_RATE:
                self._worker.config.publish_rate = float(p.value)
            elif p.name == PARAM_MAX_STEPS:
                self._worker.set_max_steps(int(p.value))
            elif p.name == PARAM_ACTION_TIMEOUT:
                self._worker.set_action_timeout(float(p.value))
            elif p.name == PARAM_IDLE_RERENDER:
                self._worker.config.idle_rerender = bool(p.value)

    # -- callbacks (executor thread) -----------------------------------------------------------------------
    def _on_action(self, msg: Float64MultiArray) -> None:
        try:
            vector: Any = action_vector_from_message(msg)
        except MessageError as err:
            vector = err  # fails the running episode with this reason
        try:
            self._worker.submit_action(vector)
        except (BridgeBusyError, RuntimeError) as err:
            reason = "busy" if isinstance(err, BridgeBusyError) else "bridge stopping"
            self._rejections.record(reason, f"keyframe_action: {err}")
            answer = ActionRejection(reason, str(err), self.status.episode, seconds(self._stamp_now()))
            self._rejection_pub.publish(String(data=answer.to_json()))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.reset_episode()
        return response

    def _on_play_demo(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            ticket = self._worker.submit_demo()
        except (BridgeBusyError, RuntimeError) as err:
            response.success, response.message = False, str(err)
            return response
        if not ticket.started.wait(DEMO_START_TIMEOUT):
            response.success, response.message = False, "the demo did not start in time"
        elif ticket.finished.is_set() and not ticket.ok:
            response.success, response.message = False, ticket.message
        else:
            response.success, response.message = (
                True,
                "demo started; completion is reported on episode_status",
            )
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        running = self._worker.busy
        self._worker.request_stop()
        response.success = True
        response.message = f"stopping {running}" if running else "no motion in progress; episode ended"
        return response

    # -- publishing (worker thread) ------------------------------------------------------------------------
    def _publish_set(self, observation: Observation) -> None:
        self._cameras.publish(observation, self._stamp_now())

    def _publish_status(self, status: EpisodeStatus) -> None:
        with self._status_lock:
            status = status.with_(stamp=seconds(self._stamp_now()))
            if status.instruction and status.instruction != self._instruction:
                self._instruction = status.instruction
                self._instruction_pub.publish(String(data=status.instruction))
            self._status_pub.publish(status_to_message(status))


@console_main
def main(args: list[str] | None = None) -> int:
    """Console entry point: run the bridge until SIGINT/SIGTERM, then stop the worker and shut down."""
    return run_node(
        SimBridgeNode, NODE_NAME, args, startup_errors=(SimError, ValueError, ImportError, TimeoutError)
    )


if __name__ == "__main__":
    sys.exit(main())
