"""``policy`` ROS 2 node: the ARP half of a Mirror checkpoint drives the bridge keyframe by keyframe.

Subscribes to the bridge's four camera sets with ``joint_states`` (exact-stamp synchronised), ``instruction``
and ``episode_status`` (both latched, so a restarted node resumes the running episode). While the episode is
``running`` and the arm idle, it acts once per step on the first complete camera set stamped after the latest
status change: ``MirrorAgent.act`` -> ``keyframe_action`` (+ ``target_pose`` stamped with the observation's
stamp) and a ``policy_actions`` report with the inference time and the observation-to-publish latency.

An empty instruction (or none yet) is stand-by: nothing is acted on. An instruction outside the checkpoint's
vocabulary is warned about and acted on anyway. Bad input (wrong image size or encoding, a missing camera,
stale sets, mostly-NaN depth) is logged at a limited rate and skipped; the node keeps running.

    policy_node --ros-args -p checkpoint:=checkpoints/mirror_cpu_small

Parameters: ``checkpoint`` (relative paths: see :mod:`mirror.ros.launch_config`), ``device``,
``threads`` (torch threads, 0 = torch's default), ``max_set_age`` (s; older sets are stale),
``observation_timeout`` (s without a usable set before a warning), ``max_invalid_depth_fraction``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import torch
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, String

from mirror.ros.acting import ActingState, InputLimits, observation_from_camera_set
from mirror.ros.agent_loading import load_agent
from mirror.ros.parameters import POLICY_PARAMETERS
from mirror.ros.policy_messages import PolicyActionInfo, PolicyState
from mirror.ros.topics import (
    PARAM_CHECKPOINT,
    PARAM_COARSE_PRIOR,
    PARAM_DEVICE,
    PARAM_PRECISION,
    PARAM_THREADS,
    POLICY_ACTIONS_TOPIC,
    POLICY_NODE_NAME,
    POLICY_STATE_TOPIC,
    STANDBY_INSTRUCTION,
    events_qos,
)
from mirror_common.cli import console_main
from mirror_common.reasons import ReasonLog
from mirror_common.ros.node_runtime import NodeStartupError, run_node
from mirror_common.ros.qos import command_qos, latched_qos
from sim_bridge.actions import MAX_KEYFRAMES
from sim_bridge.ros.errors import MessageError
from sim_bridge.ros.instructions import InstructionError, check_instruction, instruction_id
from sim_bridge.ros.messages import action_to_message, ns_to_stamp, read_status, target_pose_message
from sim_bridge.ros.observation_sync import (
    CameraSet,
    CameraSetSynchronizer,
    SyncConfig,
    subscribe_camera_sets,
)
from sim_bridge.ros.topics import (
    EPISODE_STATUS_TOPIC,
    INSTRUCTION_TOPIC,
    KEYFRAME_ACTION_TOPIC,
    TARGET_POSE_TOPIC,
)

PARAM_MAX_SET_AGE = "max_set_age"
PARAM_OBSERVATION_TIMEOUT = "observation_timeout"
PARAM_MAX_INVALID_DEPTH = "max_invalid_depth_fraction"
LOG_PERIOD = 5.0  # s between repeats of one warning


class PolicyNode(Node):
    """See the module docstring. Raises :class:`NodeStartupError` if the checkpoint cannot be loaded."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(POLICY_NODE_NAME, **kwargs)
        for name, default in POLICY_PARAMETERS.items():
            self.declare_parameter(name, default)
        try:
            self.limits = InputLimits(float(self._param(PARAM_MAX_INVALID_DEPTH)))
            self.agent, self.checkpoint = load_agent(
                self._param(PARAM_CHECKPOINT),
                self._param(PARAM_DEVICE),
                int(self._param(PARAM_THREADS)),
                self._param(PARAM_PRECISION),
                float(self._param(PARAM_COARSE_PRIOR)),
            )
            arp = self.agent.model.arp.config
            size = (arp.camera_resolution, arp.camera_resolution)
            sync_config = SyncConfig(
                cameras=tuple(arp.cameras),
                image_size=size,
                max_age=float(self._param(PARAM_MAX_SET_AGE)),
                with_joint_states=True,
            )
        except (NodeStartupError, ValueError) as err:
            super().destroy_node()
            raise NodeStartupError(str(err)) from err
        self.vocabulary: tuple[str, ...] = tuple(self.agent.config.instructions)
        self.observation_timeout = float(self._param(PARAM_OBSERVATION_TIMEOUT))
        self.instruction: str | None = None  # None: nothing received yet (stand-by)
        self.rejections = ReasonLog(logging.getLogger(POLICY_NODE_NAME), LOG_PERIOD)
        self.acting = ActingState()
        self.actions_published = 0
        self._waiting_since: float | None = None  # monotonic time acting became due
        self._announced_end: int | None = None

        self._action_pub = self.create_publisher(Float64MultiArray, KEYFRAME_ACTION_TOPIC, command_qos())
        self._target_pub = self.create_publisher(PoseStamped, TARGET_POSE_TOPIC, command_qos())
        self._state_pub = self.create_publisher(String, POLICY_STATE_TOPIC, latched_qos())
        self._info_pub = self.create_publisher(String, POLICY_ACTIONS_TOPIC, events_qos())
        self.sync = CameraSetSynchronizer(sync_config, on_set=self._on_set)
        subscribe_camera_sets(self, self.sync)
        self.create_subscription(String, EPISODE_STATUS_TOPIC, self._on_status, latched_qos())
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, latched_qos())
        self.create_timer(1.0, self._watchdog)
        self._publish_state()
        self.get_logger().info(
            f"policy ready: {self.checkpoint} ({len(self.vocabulary)} instructions, cameras {arp.cameras}, "
            f"{torch_threads()} torch threads); waiting for an instruction on '{INSTRUCTION_TOPIC}'"
        )

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    # -- inputs --------------------------------------------------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        try:
            text = check_instruction(msg.data)
        except InstructionError as err:
            self.rejections.record(f"instruction {err.kind}", f"{err}; on stand-by until a valid one arrives")
            text = STANDBY_INSTRUCTION
        if text == self.instruction:
            return
        self.instruction = text
        if text == STANDBY_INSTRUCTION:
            self.get_logger().info("stand-by: empty instruction, not acting until an instruction arrives")
        elif text not in self.vocabulary:
            self.get_logger().warning(
                f"instruction {text!r} is not in the checkpoint's vocabulary ({len(self.vocabulary)} "
                "instructions); acting on it anyway"
            )
        else:
            self.get_logger().info(f"following instruction {text!r}")
        self._publish_state()

    def _on_status(self, msg: String) -> None:
        status = read_status(self, msg, LOG_PERIOD)
        if status is None:
            return
        if self.acting.update_status(status):
            self.get_logger().info(
                f"episode {status.episode}: {status.task} variation {status.variation} ({status.state})"
            )
            self._publish_state()
        if status.finished and self._announced_end != status.episode:
            self._announced_end = status.episode
            self.get_logger().info(
                f"episode {status.episode} ended: {status.state} after {status.step} actions "
                f"({status.reason})"
            )
        self._waiting_since = time.monotonic() if self.acting.wants_to_act else None

    def _on_set(self, camera_set: CameraSet) -> None:
        if not self.instruction or not self.acting.accepts(camera_set):
            return
        status = self.acting.status
        assert status is not None
        try:
            observation = observation_from_camera_set(camera_set, self.acting.gripper_open, self.limits)
        except MessageError as err:
            self.get_logger().warning(
                f"skipping the camera set at {camera_set.stamp_ns * 1e-9:.3f}: {err}",
                throttle_duration_sec=LOG_PERIOD,
            )
            return
        instruction = self.instruction
        started = time.perf_counter()
        try:
            action, _ = self.agent.act(observation, instruction, min(status.step, MAX_KEYFRAMES - 1))
        except ValueError as err:  # PolicyInputError, InvalidActionError: input the model cannot use
            self.get_logger().warning(
                f"cannot act on this observation: {err}", throttle_duration_sec=LOG_PERIOD
            )
            return
        except Exception as err:  # a model bug must not take the node down; the next set tries again
            self.get_logger().error(
                f"MirrorAgent.act failed: {type(err).__name__}: {err}", throttle_duration_sec=LOG_PERIOD
            )
            return
        inference_ms = (time.perf_counter() - started) * 1e3
        self._action_pub.publish(action_to_message(action))
        self._target_pub.publish(target_pose_message(action, ns_to_stamp(camera_set.stamp_ns)))
        latency_ms = (self.get_clock().now().nanoseconds - camera_set.stamp_ns) * 1e-6
        episode, step = self.acting.mark_acted(action)
        self._waiting_since = None
        self.actions_published += 1
        info = PolicyActionInfo(
            episode=episode,
            step=step,
            instruction_id=instruction_id(instruction),
            known_instruction=instruction in self.vocabulary,
            action=[float(v) for v in action.to_vector()],
            inference_ms=inference_ms,
            latency_ms=latency_ms,
            observation_stamp=camera_set.stamp_ns * 1e-9,
        )
        self._info_pub.publish(String(data=info.to_json()))
        self._publish_state()
        x, y, z = (float(v) for v in action.position)
        self.get_logger().info(
            f"episode {episode} step {step}: action xyz=({x:.3f}, {y:.3f}, {z:.3f}) "
            f"gripper={'open' if action.gripper_open else 'closed'} "
            f"ignore_collisions={int(action.ignore_collisions)}; inference {inference_ms:.1f} ms, "
            f"observation->publish {latency_ms:.1f} ms"
        )

    # -- reporting -----------------------------------------------------------------------------------------
    def _watchdog(self) -> None:
        status = self.acting.status
        if status is None or not self.acting.wants_to_act:
            return
        if not self.instruction:
            self.get_logger().info(
                f"episode {status.episode} is running but the policy is on stand-by "
                f"(no instruction on '{INSTRUCTION_TOPIC}')",
                throttle_duration_sec=30.0,
            )
            return
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        waited = time.monotonic() - self._waiting_since
        if waited > self.observation_timeout:
            stats = self.sync.stats
            self.get_logger().warning(
                f"no usable camera set for {waited:.1f} s while an action is due; missing: "
                f"{self.sync.describe_missing()}; latest rejections: {self.sync.describe_rejections()}; sets "
                f"completed {stats.completed}, stale {stats.stale}, malformed messages {stats.malformed}, "
                f"future-stamped {stats.future}, clock jumps {stats.clock_jumps}",
                throttle_duration_sec=LOG_PERIOD,
            )

    def _publish_state(self) -> None:
        instruction = self.instruction or STANDBY_INSTRUCTION
        state = PolicyState(
            ready=True,
            checkpoint=str(self.checkpoint),
            vocabulary=list(self.vocabulary),
            instruction_id=instruction_id(instruction),
            known_instruction=not instruction or instruction in self.vocabulary,
            episode=self.acting.status.episode if self.acting.status is not None else 0,
            actions=self.actions_published,
            stamp=self.get_clock().now().nanoseconds * 1e-9,
        )
        self._state_pub.publish(String(data=state.to_json()))


def torch_threads() -> int:
    return torch.get_num_threads()


@console_main
def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, POLICY_NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
