"""What the mirror loop writes per episode besides its log (ROS-free): file names, the metadata of its
recording (``record``, :mod:`~mirror.ros.recording`), and its annotated GIF (``videos``), built on
:mod:`mirror.evaluation.rollout_video`.

One GIF per episode, ``<videos>/ep<NNN>_<task>_v<variation>_{success|failure}.gif``: the demonstration and
then the policy's episode in the new layout, from the front camera, with the episode's task and phase, the
demonstrated instruction, the live and final recognition, the instruction the policy acts on, each
predicted keyframe (projected into the image) with the bridge's step and state, and the outcome and its
reason on the held final frame.
"""

from __future__ import annotations

import os
from pathlib import Path

from mirror.evaluation.rollout_video import GIF_SUFFIX, AnnotatedVideo, Banner, KeyframeMarker
from mirror.ros.loop_report import LoopEpisode
from mirror.ros.policy_messages import PolicyActionInfo
from mirror.ros.task_selection import EpisodePlan
from mirror_perception.ros.recognized_action import RecognizedAction
from sim_bridge.observation import CameraFrame
from sim_bridge.ros.status import FINAL_STATES, SUCCESS, EpisodeStatus

DEMO_PHASE, POLICY_PHASE = "demo", "policy"


def episode_stem(plan: EpisodePlan) -> str:
    """``ep<NNN>_<task>_v<variation>``: the loop's files of one episode sort in the order they ran."""
    return f"ep{plan.index + 1:03d}_{plan.target.task}_v{plan.target.variation}"


def episode_metadata(plan: EpisodePlan) -> dict[str, object]:
    """What a recording says about its episode before it runs (MCAP metadata ``mirror_episode``)."""
    target = plan.target
    return {
        "episode": plan.index + 1, "task": target.task, "variation": target.variation,
        "instruction": target.instruction, "demo_seed": plan.demo_seed, "policy_seed": plan.policy_seed,
    }  # fmt: skip


def episode_result(record: LoopEpisode | None, outcome: str, reason: str) -> dict[str, object]:
    """How the episode went (MCAP metadata ``mirror_episode_result``); ``record`` is None when cut short."""
    result: dict[str, object] = {"outcome": outcome, "reason": reason}
    if record is not None:
        result.update(
            truth=record.truth, recognized=record.recognized, recognition_score=record.recognition_score,
            demo_outcome=record.demo_outcome, steps=record.steps,
        )  # fmt: skip
    return result


def episode_video_name(plan: EpisodePlan, outcome: str) -> str:
    """The GIF's file name; ``outcome`` is the policy episode's final state (or e.g. ``aborted``)."""
    return f"{episode_stem(plan)}_{outcome or 'unfinished'}{GIF_SUFFIX}"


class EpisodeVideo:
    """The film of one mirror-loop episode. The loop calls :meth:`start_demo` / :meth:`start_policy` when a
    phase's bridge episode starts and :meth:`finish` at the end; the node forwards every camera set,
    recognition, status and action report as it arrives (those of other bridge episodes are ignored)."""

    def __init__(self, plan: EpisodePlan, total: int, video: AnnotatedVideo | None = None) -> None:
        self.plan = plan
        self.title = f"episode {plan.index + 1}/{total}: {plan.target.task} variation {plan.target.variation}"
        self.truth = plan.target.instruction  # until the bridge says what it demonstrates
        self.video = video if video is not None else AnnotatedVideo()
        self.phase = ""
        self.episode = -1  # the bridge episode being filmed
        self.since_ns = 0  # camera sets stamped earlier show the previous scene
        self.recognition = ""
        self.acting_on = ""
        self.progress = ""
        self._update()

    # -- phases (the loop) ---------------------------------------------------------------------------------
    def start_demo(self, status: EpisodeStatus) -> None:
        """The demonstration's bridge episode has been reset (``status`` is its first status)."""
        self.truth = status.instruction or self.truth
        self.progress = "demonstration"
        self._start(DEMO_PHASE, status)

    def start_policy(self, status: EpisodeStatus, instruction: str) -> None:
        """The policy's bridge episode has been reset; the policy acts on ``instruction``."""
        self.video.markers = []
        self.acting_on = instruction
        self.progress = "waiting for the first keyframe"
        self._start(POLICY_PHASE, status)

    def _start(self, phase: str, status: EpisodeStatus) -> None:
        self.phase, self.episode = phase, status.episode
        self.since_ns = int(round(status.stamp * 1e9))
        self._update()

    # -- what arrives (the node) ---------------------------------------------------------------------------
    def on_camera(self, stamp_ns: int, frame: CameraFrame) -> bool:
        """A front-camera frame of the current phase's scene; True when kept."""
        if self.episode < 0 or stamp_ns < self.since_ns:
            return False
        return self.video.add(frame)

    def on_recognition(self, recognition: RecognizedAction) -> None:
        if self.phase != DEMO_PHASE or recognition.episode != self.episode:
            return
        if recognition.final:
            verdict = "correct" if recognition.instruction == self.truth else "WRONG"
            self.recognition = (
                f"recognized {recognition.instruction!r} ({recognition.score:.2f}, {verdict}, "
                f"{recognition.frames} frames)"
            )
        else:
            self.recognition = f"live: {recognition.instruction!r} ({recognition.score:.2f})"
        self._update()

    def on_status(self, status: EpisodeStatus) -> None:
        if status.episode != self.episode:
            return
        if self.phase == POLICY_PHASE:
            self.progress = f"{status.step} keyframe(s) executed, {status.state}"
        else:
            self.progress = f"demonstration: {status.state}"
        self._update()  # a final state's reason goes on the closing banner

    def on_action(self, info: PolicyActionInfo) -> None:
        if self.phase != POLICY_PHASE or info.episode != self.episode:
            return
        self.video.markers.append(KeyframeMarker.of(info.step, info.action))
        gripper = "open" if info.action[7] > 0.5 else "close"
        self.progress = f"keyframe {info.step}: gripper {gripper}, {info.inference_ms:.0f} ms inference"
        self._update()

    # -- the end -------------------------------------------------------------------------------------------
    def finish(self, outcome: str, reason: str) -> None:
        """Hold the last frame with the outcome banner (``outcome``: success, failure or e.g. aborted)."""
        success = None if outcome not in FINAL_STATES else outcome == SUCCESS
        self.video.finish(Banner(f"{outcome.upper()}: {reason}" if reason else outcome.upper(), success))

    def save(self, directory: str | os.PathLike, outcome: str) -> Path:
        """Write ``<directory>/<episode_video_name>``; ValueError when no frame arrived."""
        return self.video.save(Path(directory) / episode_video_name(self.plan, outcome))

    def _update(self) -> None:
        lines = [f"{self.title} [{self.phase or 'starting'}]", f"demonstrated: {self.truth!r}"]
        if self.recognition:
            lines.append(self.recognition)
        if self.phase == POLICY_PHASE:
            lines.append(f"policy acts on {self.acting_on!r}")
        if self.progress:
            lines.append(self.progress)
        self.video.caption = lines
