"""``mirror_loop``: watch a demonstration, recognise it, then do it — the Mirror stack's main job over ROS 2.

For each of ``episodes`` episodes it draws a (task, variation) whose instruction the policy knows (seeded by
``seed``; ``tasks`` restricts the draw, see :mod:`~mirror.ros.task_selection`) and then:

1. puts the policy on stand-by (empty ``instruction``, acknowledged on ``policy_state``);
2. sets the bridge's ``task``/``variation``/``seed`` parameters, calls ``reset_episode`` and ``play_demo``;
3. prints the perception node's live recognitions until the demo ends, then waits for its final decision;
4. publishes the recognised instruction on ``instruction`` (acknowledged by the policy), resets the bridge
   with a different seed — a new layout of the same task and variation, whose instruction is the ground
   truth — and follows the policy's actions until the episode ends in success or failure.

It prints every step as it happens and a summary at the end (recognition accuracy, success rate, mean
inference and episode times). Every wait has a timeout that names what it waited for.

Off by default: ``videos`` (a directory) writes one annotated GIF per episode from the front camera
(:mod:`~mirror.ros.episode_outputs`); ``record`` (a directory) writes one MCAP file per episode with
the stack's topics (:mod:`~mirror.ros.recording`).

Exit codes: 0 done (also after ``episodes: 0``, which only keeps the node up until Ctrl-C), 1 the stack
failed (a timeout, a rejected service call), 2 a configuration error (unknown task, nothing to draw from),
130 interrupted by SIGINT/SIGTERM while episodes were running.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mirror.ros.loop_report import LoopEpisode, LoopSummary
from mirror.ros.parameters import LoopConfig, loop_parameters
from mirror.ros.policy_messages import PolicyActionInfo, PolicyState
from mirror.ros.task_selection import (
    EpisodePicker,
    EpisodePlan,
    UnknownTaskError,
    candidate_variations,
    parse_tasks,
)
from mirror.ros.topics import (
    MIRROR_LOOP_NODE_NAME,
    POLICY_ACTIONS_TOPIC,
    POLICY_STATE_TOPIC,
    STANDBY_INSTRUCTION,
    events_qos,
    latched_history_qos,
)
from mirror_common.cli import console_main
from mirror_common.errors import MirrorError
from mirror_common.outputs import prepare_output_directory
from mirror_common.ros.node_runtime import configure_logging, follow_parent, install_stop_handlers
from mirror_common.ros.qos import latched_qos
from mirror_perception.ros.recognized_action import RecognitionMessageError, RecognizedAction
from mirror_perception.ros.topics import RECOGNIZED_ACTION_TOPIC, recognition_qos
from sim_bridge.ros.errors import MessageError
from sim_bridge.ros.instructions import InstructionError, check_instruction, instruction_id
from sim_bridge.ros.messages import status_from_message
from sim_bridge.ros.observation_sync import (
    CameraSet,
    CameraSetSynchronizer,
    SyncConfig,
    subscribe_camera_sets,
)
from sim_bridge.ros.status import FINAL_STATES, IDLE, RUNNING, EpisodeStatus
from sim_bridge.ros.topics import (
    EPISODE_STATUS_TOPIC,
    INSTRUCTION_TOPIC,
    PARAM_SEED,
    PARAM_TASK,
    PARAM_VARIATION,
    PLAY_DEMO_SERVICE,
    RESET_EPISODE_SERVICE,
)
from sim_bridge.ros.topics import (
    NODE_NAME as BRIDGE_NODE_NAME,
)

if TYPE_CHECKING:  # imported when asked for: drawing pulls in the evaluation package
    from mirror.ros.episode_outputs import EpisodeVideo
    from mirror.ros.recording import TopicRecorder

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130
VIDEO_SET_MAX_AGE = 5.0  # s: a front-camera set older than this when it completes is not filmed


class LoopInterruptedError(Exception):
    """SIGINT/SIGTERM arrived while the loop was waiting."""


class LoopError(MirrorError, RuntimeError):
    """The stack did not do what the loop asked (a timeout or a rejected request); the message says what."""


class MirrorLoopNode(Node):
    """The loop's ROS side: it records what arrives; :class:`MirrorLoop` decides and reports."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(MIRROR_LOOP_NODE_NAME, **kwargs)
        for name, value in loop_parameters().items():
            self.declare_parameter(name, value)
        self.status: EpisodeStatus | None = None
        self.statuses: list[EpisodeStatus] = []
        self.recognitions: list[RecognizedAction] = []
        self.policy_state: PolicyState | None = None
        self.action_infos: list[PolicyActionInfo] = []
        self.video: EpisodeVideo | None = None  # the episode being filmed, fed by the callbacks below
        self.create_subscription(String, EPISODE_STATUS_TOPIC, self._on_status, latched_history_qos())
        self.create_subscription(String, RECOGNIZED_ACTION_TOPIC, self._on_recognition, recognition_qos())
        self.create_subscription(String, POLICY_STATE_TOPIC, self._on_policy_state, latched_qos())
        self.create_subscription(String, POLICY_ACTIONS_TOPIC, self._on_action_info, events_qos())
        self.instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
        self.reset_client = self.create_client(Trigger, RESET_EPISODE_SERVICE)
        self.demo_client = self.create_client(Trigger, PLAY_DEMO_SERVICE)
        self.bridge_parameters = AsyncParameterClient(self, BRIDGE_NODE_NAME)

    def config(self) -> LoopConfig:
        return LoopConfig(**{name: self.get_parameter(name).value for name in loop_parameters()})

    def watch_front_camera(self, camera: str) -> None:
        """Subscribe to ``camera``'s sets (image, depth, calibration, pose) for the episode videos."""
        sync = CameraSetSynchronizer(
            SyncConfig(cameras=(camera,), image_size=None, max_age=VIDEO_SET_MAX_AGE),
            on_set=self._on_camera_set,
        )
        subscribe_camera_sets(self, sync)
        self._video_camera = camera

    def _on_camera_set(self, camera_set: CameraSet) -> None:
        if self.video is not None:
            self.video.on_camera(camera_set.stamp_ns, camera_set.frames[self._video_camera])

    def _warn(self, what: str, err: Exception) -> None:
        self.get_logger().warning(f"ignoring malformed {what}: {err}", throttle_duration_sec=5.0)

    def _on_status(self, msg: String) -> None:
        try:
            self.status = status_from_message(msg)
        except MessageError as err:
            self._warn(EPISODE_STATUS_TOPIC, err)
            return
        self.statuses.append(self.status)
        if self.video is not None:
            self.video.on_status(self.status)

    def _on_recognition(self, msg: String) -> None:
        try:
            self.recognitions.append(RecognizedAction.from_json(msg.data))
        except RecognitionMessageError as err:
            self._warn(RECOGNIZED_ACTION_TOPIC, err)
            return
        if self.video is not None:
            self.video.on_recognition(self.recognitions[-1])

    def _on_policy_state(self, msg: String) -> None:
        try:
            self.policy_state = PolicyState.from_json(msg.data)
        except MessageError as err:
            self._warn(POLICY_STATE_TOPIC, err)

    def _on_action_info(self, msg: String) -> None:
        try:
            self.action_infos.append(PolicyActionInfo.from_json(msg.data))
        except MessageError as err:
            self._warn(POLICY_ACTIONS_TOPIC, err)
            return
        if self.video is not None:
            self.video.on_action(self.action_infos[-1])


def _fmt_action(action: list[float]) -> str:
    x, y, z = action[:3]
    gripper = "open" if action[7] > 0.5 else "closed"
    return f"xyz=({x:.3f}, {y:.3f}, {z:.3f}) gripper={gripper} ignore_collisions={int(action[8] > 0.5)}"


class MirrorLoop:
    """The loop itself, driving a :class:`MirrorLoopNode` from the main thread (see the module docstring)."""

    def __init__(
        self,
        node: MirrorLoopNode,
        config: LoopConfig,
        out: TextIO,
        stop: Callable[[], bool],
        recorder: TopicRecorder | None = None,
    ) -> None:
        self.node = node
        self.config = config
        self.out = out
        self.stop = stop
        self.recorder = recorder  # writes each episode's topics (``record``)
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._watch: Callable[[], None] | None = None  # prints events while waiting
        self.records: list[LoopEpisode] = []
        if config.videos:
            from mirror.evaluation.rollout_video import VIDEO_CAMERA

            node.watch_front_camera(VIDEO_CAMERA)

    # -- plumbing ------------------------------------------------------------------------------------------
    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def spin_until(
        self,
        done: Callable[[], object],
        timeout: float,
        what: str,
        progress: Callable[[], object] | None = None,
        stall_timeout: float | None = None,
    ) -> None:
        """Spin until ``done()``; LoopError after ``timeout`` s, or after ``stall_timeout`` s in which
        ``progress()`` did not change."""
        start = time.monotonic()
        last_progress, last_change = (progress() if progress else None), start
        while True:
            if self.stop():
                raise LoopInterruptedError
            self.executor.spin_once(timeout_sec=0.05)
            if self._watch is not None:
                self._watch()
            if done():
                return
            now = time.monotonic()
            if progress is not None:
                current = progress()
                if current != last_progress:
                    last_progress, last_change = current, now
                elif stall_timeout is not None and now - last_change > stall_timeout:
                    raise LoopError(f"nothing happened for {stall_timeout:.0f} s while waiting for {what}")
            if now - start > timeout:
                raise LoopError(f"timed out after {timeout:.0f} s waiting for {what}")

    def call(self, client: Any, name: str, timeout: float) -> Trigger.Response:
        future = client.call_async(Trigger.Request())
        self.spin_until(future.done, timeout, f"the {name} service to answer")
        response = future.result()
        if response is None:
            raise LoopError(f"{name} failed: {future.exception()}")
        return response

    def shutdown(self) -> None:
        self.executor.remove_node(self.node)
        self.executor.shutdown()

    # -- steps ---------------------------------------------------------------------------------------------
    def wait_for_stack(self) -> PolicyState:
        node, timeout = self.node, self.config.startup_timeout
        self.say("waiting for sim_bridge, policy and perception ...")
        self.spin_until(
            lambda: node.reset_client.service_is_ready() and node.demo_client.service_is_ready()
            and node.bridge_parameters.services_are_ready(),
            timeout, "the sim_bridge node (reset_episode, play_demo and parameter services)",
        )  # fmt: skip
        self.spin_until(
            lambda: node.policy_state is not None and node.policy_state.ready,
            timeout, f"the policy node to load its checkpoint ({POLICY_STATE_TOPIC})",
        )  # fmt: skip
        self.spin_until(
            lambda: node.count_publishers(RECOGNIZED_ACTION_TOPIC) > 0,
            timeout, f"the perception node to load its checkpoint ({RECOGNIZED_ACTION_TOPIC} publisher)",
        )  # fmt: skip
        state = node.policy_state
        assert state is not None
        self.say(f"stack ready: policy checkpoint {state.checkpoint} ({len(state.vocabulary)} instructions)")
        return state

    def command_instruction(self, text: str) -> None:
        """Publish the policy's instruction and wait until the policy reports following it."""
        try:
            text = check_instruction(text)  # before publishing: rclpy would cut it at a NUL
        except InstructionError as err:
            raise LoopError(str(err)) from err
        self.node.instruction_pub.publish(String(data=text))
        self.spin_until(
            lambda: (
                self.node.policy_state is not None
                and self.node.policy_state.instruction_id == instruction_id(text)
            ),
            self.config.ack_timeout,
            f"the policy to acknowledge the instruction {text!r} on {POLICY_STATE_TOPIC}",
        )

    def reset(self, task: str, variation: int, seed: int) -> EpisodeStatus:
        node, config = self.node, self.config
        # Atomically: set one by one, a new task would be checked against the previous task's variation.
        future = node.bridge_parameters.set_parameters_atomically(
            [Parameter(PARAM_TASK, value=task), Parameter(PARAM_VARIATION, value=variation),
             Parameter(PARAM_SEED, value=seed)]
        )  # fmt: skip
        self.spin_until(future.done, config.service_timeout, "sim_bridge to take task/variation/seed")
        response = future.result()
        if response is None:
            raise LoopError(f"setting the bridge's parameters failed: {future.exception()}")
        if not response.result.successful:
            raise LoopError(
                f"sim_bridge rejected task {task} variation {variation} seed {seed}: {response.result.reason}"
            )
        self.spin_until(
            lambda: node.status is not None and not node.status.busy,
            config.reset_timeout, "sim_bridge to finish the command it is running (busy)",
        )  # fmt: skip
        before = node.status.episode if node.status is not None else 0
        seen = len(node.statuses)

        def started() -> EpisodeStatus | None:
            """The new episode's first status (later ones may already show the policy acting)."""
            return next((st for st in node.statuses[seen:] if st.episode > before), None)

        response = self.call(node.reset_client, RESET_EPISODE_SERVICE, config.reset_timeout)
        if not response.success:
            raise LoopError(f"{RESET_EPISODE_SERVICE} failed: {response.message}")
        self.spin_until(
            lambda: started() is not None,
            config.service_timeout,
            "the new episode's status on episode_status",
        )
        status = started()
        assert status is not None
        return status

    def wait_episode_end(self, episode: int, timeout: float, what: str, **stall: Any) -> EpisodeStatus:
        node = self.node

        def ended() -> bool:
            s = node.status
            return s is not None and (s.episode != episode or s.state in FINAL_STATES or s.state == IDLE)

        self.spin_until(ended, timeout, what, **stall)
        assert node.status is not None
        return node.status

    # -- one episode ---------------------------------------------------------------------------------------
    def run_episode(self, plan: EpisodePlan, total: int) -> LoopEpisode:
        """One episode, filmed (``videos``) and recorded (``record``) when asked; an episode cut short by an
        error or Ctrl-C still gets its files, marked ``aborted``."""
        if self.config.videos or self.recorder is not None:
            from mirror.ros.episode_outputs import EpisodeVideo, episode_metadata, episode_stem

            if self.recorder is not None:
                self.recorder.start_episode(episode_stem(plan), episode_metadata(plan))
            if self.config.videos:
                self.node.video = EpisodeVideo(plan, total)
        try:
            record = self._run_episode(plan, total)
        except BaseException as err:
            self._close_outputs(None, "aborted", str(err) or type(err).__name__)
            raise
        self._close_outputs(record, record.outcome, record.reason)
        return record

    def _close_outputs(self, record: LoopEpisode | None, outcome: str, reason: str) -> None:
        """Write the episode's video and close its recording, saying where they went."""
        video, self.node.video = self.node.video, None
        if video is not None:
            video.finish(outcome, reason)
            try:
                self.say(f"  video: {video.save(self.config.videos, outcome)}")
            except (OSError, ValueError) as err:  # no frame arrived, disk full: the loop goes on
                self.say(f"  no video written: {err}")
        if self.recorder is not None:
            from mirror.ros.episode_outputs import episode_result

            try:
                ended = self.recorder.end_episode(episode_result(record, outcome, reason))
            except OSError as err:
                self.say(f"  recording not closed: {err}")
                return
            if ended is not None:
                path, counts = ended
                failed = f"; stopped early: {self.recorder.failed}" if self.recorder.failed else ""
                self.say(
                    f"  recording: {path} ({sum(counts.values())} messages, {len(counts)} topics{failed})"
                )

    def _run_episode(self, plan: EpisodePlan, total: int) -> LoopEpisode:
        node, config, target = self.node, self.config, plan.target
        self.say(
            f"episode {plan.index + 1}/{total}: {target.task} variation {target.variation} "
            f"(demo seed {plan.demo_seed}, policy seed {plan.policy_seed})"
        )
        self.command_instruction(STANDBY_INSTRUCTION)
        demo_status = self.reset(target.task, target.variation, plan.demo_seed)
        if node.video is not None:
            node.video.start_demo(demo_status)
        record = LoopEpisode(plan, truth=demo_status.instruction)
        demo_episode = demo_status.episode
        recognitions_before = len(node.recognitions)
        self._watch = self._live_recognition_printer(demo_episode, recognitions_before)
        started = time.monotonic()
        response = self.call(node.demo_client, PLAY_DEMO_SERVICE, config.service_timeout)
        if not response.success:
            raise LoopError(f"{PLAY_DEMO_SERVICE} failed: {response.message}")
        self.say(f"  demo started (bridge episode {demo_episode}): {record.truth!r}")
        end = self.wait_episode_end(
            demo_episode, config.demo_timeout, f"the demonstration of episode {demo_episode}"
        )
        record.demo_outcome, record.demo_seconds = end.state, time.monotonic() - started
        self.say(f"  demo ended: {end.state} ({end.reason}) after {record.demo_seconds:.1f} s")

        def final() -> RecognizedAction | None:
            return next(
                (r for r in node.recognitions[recognitions_before:] if r.final and r.episode == demo_episode),
                None,
            )

        self.spin_until(
            lambda: final() is not None, config.recognition_timeout,
            f"the final recognition of episode {demo_episode} on {RECOGNIZED_ACTION_TOPIC}",
        )  # fmt: skip
        self._watch = None
        result = final()
        assert result is not None
        record.recognized, record.recognition_score = result.instruction, result.score
        verdict = "correct" if record.recognized_correctly else "WRONG"
        self.say(
            f"  final recognition over {result.frames} frames: {result.instruction!r} "
            f"(score {result.score:.3f}) vs truth {record.truth!r}: {verdict}"
        )
        self.say("  top-k: " + "; ".join(f"{name!r} {score:.3f}" for name, score in result.top_k))
        if not result.instruction:
            record.outcome, record.reason = "failure", "nothing was recognised, so there was nothing to do"
            self.say(f"  episode failure: {record.reason}")
            return record

        self.command_instruction(result.instruction)
        status = self.reset(target.task, target.variation, plan.policy_seed)
        if node.video is not None:
            node.video.start_policy(status, result.instruction)
        episode = status.episode
        self.say(f"  policy episode (bridge episode {episode}, new layout): acting on {result.instruction!r}")
        self._watch = self._policy_printer(episode, len(node.action_infos), len(node.statuses))
        started = time.monotonic()
        end = self.wait_episode_end(
            episode,
            config.episode_timeout,
            f"the policy's episode {episode} to end",
            progress=lambda: (len(node.action_infos), len(node.statuses)),
            stall_timeout=config.action_timeout,
        )
        self._watch()
        self._watch = None
        record.episode_seconds = time.monotonic() - started
        record.outcome, record.reason, record.steps = end.state, end.reason, end.step
        infos = [i for i in node.action_infos if i.episode == episode]
        record.inference_ms = [i.inference_ms for i in infos]
        record.latency_ms = [i.latency_ms for i in infos]
        self.say(
            f"  episode {end.state}: {end.reason} ({end.step} actions executed, "
            f"{record.episode_seconds:.1f} s)"
        )
        return record

    def _live_recognition_printer(self, episode: int, start: int) -> Callable[[], None]:
        cursor = [start]

        def show() -> None:
            new = self.node.recognitions[cursor[0] :]
            cursor[0] += len(new)
            for r in new:
                if r.episode == episode and not r.final:
                    self.say(
                        f"  live recognition ({r.frames} frames): {r.instruction!r} (score {r.score:.3f})"
                    )

        return show

    def _policy_printer(self, episode: int, infos_start: int, statuses_start: int) -> Callable[[], None]:
        cursor = {"infos": infos_start, "statuses": statuses_start}

        def show() -> None:
            node = self.node
            for info in node.action_infos[cursor["infos"] :]:
                if info.episode == episode:
                    self.say(
                        f"  step {info.step}: action {_fmt_action(info.action)} (inference "
                        f"{info.inference_ms:.1f} ms, observation->publish {info.latency_ms:.1f} ms)"
                    )
            cursor["infos"] = len(node.action_infos)
            for status in node.statuses[cursor["statuses"] :]:
                if status.episode == episode and status.state == RUNNING and status.step > 0:
                    self.say(f"  step {status.step - 1}: executed, episode continues")
            cursor["statuses"] = len(node.statuses)

        return show

    # -- the whole loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        config = self.config
        if config.episodes == 0:
            self.say("episodes: 0 - nothing to run; the stack stays up for other clients until Ctrl-C")
            while not self.stop():
                self.executor.spin_once(timeout_sec=0.1)
            return EXIT_OK
        state = self.wait_for_stack()
        try:
            candidates = candidate_variations(state.vocabulary, parse_tasks(config.tasks))
        except (UnknownTaskError, ValueError) as err:
            self.say(f"configuration error: {err}")
            return EXIT_CONFIG
        self.say(f"drawing from {len(candidates)} task variation(s) with seed {config.seed}")
        picker = EpisodePicker(candidates, config.seed)
        for _ in range(config.episodes):
            self.records.append(self.run_episode(picker.next(), config.episodes))
        self.command_instruction(STANDBY_INSTRUCTION)
        self.print_summary()
        return EXIT_OK

    def print_summary(self) -> None:
        for line in LoopSummary.of(self.records).lines():
            self.say(line)


@console_main
def main(args: list[str] | None = None) -> int:
    """Console entry point (see the module docstring for the exit codes)."""
    configure_logging()
    follow_parent()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = install_stop_handlers()
    out = sys.stdout
    try:
        node = MirrorLoopNode()
    except ParameterException as err:
        out.write(f"mirror_loop: invalid parameters: {err}\n")
        rclpy.try_shutdown()
        return EXIT_CONFIG
    try:
        config = node.config()
        for name in ("videos", "record"):  # absolute, created, writable: refused now rather than later
            if getattr(config, name):
                setattr(
                    config, name, str(prepare_output_directory(getattr(config, name), f"{name} directory"))
                )
    except (ValueError, TypeError) as err:  # OutputDirectoryError is a ValueError
        out.write(f"mirror_loop: invalid parameters: {err}\n")
        node.destroy_node()
        rclpy.try_shutdown()
        return EXIT_CONFIG
    recorder = None
    if config.record:
        from mirror.ros.recording import TopicRecorder

        recorder = TopicRecorder(config.record, node.context, node.get_namespace())
    loop = MirrorLoop(node, config, out, stop.is_set, recorder)
    code = EXIT_FAILED
    try:
        code = loop.run()
    except LoopInterruptedError:
        out.write("mirror_loop: interrupted\n")
        code = EXIT_INTERRUPTED
    except LoopError as err:
        out.write(f"mirror_loop: {err}\n")
        code = EXIT_FAILED
    finally:
        if code != EXIT_OK and loop.records:
            out.write("(partial results)\n")
            loop.print_summary()
        out.flush()
        loop.shutdown()
        if recorder is not None:
            recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
