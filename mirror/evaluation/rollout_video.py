"""Annotated GIFs of episodes, so that a failure can be *seen*: where the policy put each keyframe, what it
was told, and why the episode ended (ROS-free: ``evaluate --videos`` and the mirror loop's ``videos`` both
use it).

A frame is a camera image (128x128 by default) upscaled with nearest-neighbour sampling for legibility, with
a caption band on top (instruction, keyframe index, ...), the predicted keyframe positions projected into the
image with the frame's own calibration (:func:`sim_bridge.cameras.project_world_points`, RLBench's
negative-focal-length convention), and on the final, held frame a banner with the outcome and its reason.

:class:`AnnotatedVideo` collects frames as they come (every ``every``-th one, shown as long as the frames it
stands for, so the GIF plays in real time; identical consecutive pictures merged; the frame rate halved
whenever ``max_frames`` is reached, so memory stays bounded) and renders them only when saved.
:class:`RolloutVideoRecorder` films one ``evaluate`` rollout through the rollout's observer hooks (the
simulator's per-control-tick ``on_frame`` callback).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mirror.evaluation.rollout import EpisodeOutcome, RolloutObserver
from sim_bridge.actions import KeyframeAction
from sim_bridge.backend import EpisodeInfo
from sim_bridge.cameras import project_world_points
from sim_bridge.observation import CameraFrame, Observation

VIDEO_CAMERA = "front"
DEFAULT_SCALE = 3
DEFAULT_EVERY = 2  # keep every 2nd frame offered
DEFAULT_FRAME_MS = 50  # the time one offered frame stands for: a 20 Hz control tick
HOLD_MS = 3000  # the final frame, with the outcome banner, stays this long
MAX_FRAMES = 300  # beyond this the kept frames are thinned by 2 (and ``every`` doubles)
GIF_SUFFIX = ".gif"

OPEN_COLOR = (0, 210, 255)  # keyframe with the gripper open
CLOSED_COLOR = (255, 150, 0)  # keyframe with the gripper closed
SUCCESS_COLOR = (20, 140, 40)
FAILURE_COLOR = (190, 30, 30)
INFO_COLOR = (60, 60, 60)
TEXT_COLOR = (255, 255, 255)


@dataclass(frozen=True)
class KeyframeMarker:
    """A predicted keyframe to draw: its world position, its label (the keyframe index) and gripper state."""

    position: tuple[float, float, float]
    label: str
    gripper_open: bool = True

    @classmethod
    def of(cls, step: int, action: KeyframeAction | Sequence[float]) -> KeyframeMarker:
        """The marker of keyframe ``step`` (an action or its RLBench 9-vector)."""
        if isinstance(action, KeyframeAction):
            position, gripper_open = action.position, action.gripper_open
        else:
            position, gripper_open = action[:3], float(action[7]) > 0.5
        return cls(tuple(float(v) for v in position), str(step), gripper_open)


@dataclass(frozen=True)
class Banner:
    """The outcome line(s) drawn at the bottom of the final frame."""

    text: str
    success: bool | None = None  # None: neutral (e.g. interrupted)

    @property
    def color(self) -> tuple[int, int, int]:
        return INFO_COLOR if self.success is None else SUCCESS_COLOR if self.success else FAILURE_COLOR


@dataclass(frozen=True)
class _Snapshot:
    rgb: np.ndarray
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    caption: tuple[str, ...]
    markers: tuple[KeyframeMarker, ...]
    duration_ms: int
    banner: Banner | None = None

    def same_picture(self, other: _Snapshot) -> bool:
        return (
            self.caption == other.caption
            and self.markers == other.markers
            and np.array_equal(self.rgb, other.rgb)
            and np.array_equal(self.extrinsics, other.extrinsics)
        )


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels (long words are cut by characters)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=font) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=font) > width and len(line) > 1:
                cut = max(1, int(len(line) * width / draw.textlength(line, font=font)))
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def _text_band(
    image: Image.Image, lines: Sequence[str], top: bool, color: tuple[int, int, int], alpha: int, size: int
) -> None:
    """Write ``lines`` (wrapped) on a translucent band along the top or bottom edge of ``image``."""
    if not lines:
        return
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = _font(size)
    margin = max(2, size // 4)
    wrapped = [w for line in lines for w in _wrap(line, draw, font, image.width - 2 * margin)]
    line_height = size + margin // 2 + 1
    height = len(wrapped) * line_height + margin
    y0 = 0 if top else image.height - height
    draw.rectangle([0, y0, image.width, y0 + height], fill=(*color, alpha))
    for i, line in enumerate(wrapped):
        draw.text((margin, y0 + margin // 2 + i * line_height), line, font=font, fill=(*TEXT_COLOR, 255))
    image.paste(Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB"))


def marker_pixels(
    markers: Sequence[KeyframeMarker], intrinsics: np.ndarray, extrinsics: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """((N, 2) pixel (u, v), (N,) z-depth) of the markers in a camera (RLBench conventions)."""
    if not markers:
        return np.zeros((0, 2)), np.zeros(0)
    points = np.array([m.position for m in markers], dtype=np.float64)
    return project_world_points(points, intrinsics, extrinsics)


def _draw_markers(
    image: Image.Image,
    markers: Sequence[KeyframeMarker],
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    scale: int,
    size: int,
) -> None:
    """Each keyframe as a ring labelled with its index, the newest filled, consecutive ones joined; a
    keyframe outside the image (or behind the camera) is a cross on the border."""
    pixels, depth = marker_pixels(markers, intrinsics, extrinsics)
    if not len(markers):
        return
    draw = ImageDraw.Draw(image)
    font = _font(size)
    radius = 2 * scale
    w, h = image.size
    centres = []
    for (u, v), z in zip(pixels, depth):
        x, y = (u + 0.5) * scale, (v + 0.5) * scale  # pixel u covers [u*s, (u+1)*s)
        inside = z > 0 and 0 <= x < w and 0 <= y < h
        if not (np.isfinite(x) and np.isfinite(y)):  # in the camera's plane: no direction at all
            x, y = w / 2, h / 2
        elif not z > 0:  # behind the camera: the projection is mirrored through the image centre
            x, y = w - x, h - y
        centres.append((float(np.clip(x, radius, w - 1 - radius)), float(np.clip(y, radius, h - 1 - radius)),
                        inside))  # fmt: skip
    for (x0, y0, _), (x1, y1, _) in zip(centres, centres[1:]):
        draw.line([x0, y0, x1, y1], fill=(255, 255, 255), width=1)
    for i, (marker, (x, y, inside)) in enumerate(zip(markers, centres)):
        color = OPEN_COLOR if marker.gripper_open else CLOSED_COLOR
        newest = i == len(markers) - 1
        box = [x - radius, y - radius, x + radius, y + radius]
        if not inside:
            draw.line([box[0], box[1], box[2], box[3]], fill=color, width=2)
            draw.line([box[0], box[3], box[2], box[1]], fill=color, width=2)
        elif newest:
            draw.ellipse(box, fill=color, outline=(0, 0, 0), width=1)
        else:
            draw.ellipse(box, outline=color, width=2)
        tx = x + radius + 1 if x + radius + 1 + size < w else x - radius - 1 - size
        draw.text((tx, y - size // 2 - 1), marker.label, font=font, fill=color, stroke_width=1,
                  stroke_fill=(0, 0, 0))  # fmt: skip


def render_frame(
    rgb: np.ndarray,
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    caption: Sequence[str] = (),
    markers: Sequence[KeyframeMarker] = (),
    banner: Banner | None = None,
    scale: int = DEFAULT_SCALE,
) -> Image.Image:
    """One annotated frame: the (H, W, 3) uint8 image upscaled ``scale`` times, markers, caption, banner."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = rgb.shape[:2]
    image = Image.fromarray(rgb).resize((w * scale, h * scale), Image.NEAREST)
    size = max(10, 4 * scale)
    _text_band(image, caption, True, (0, 0, 0), 150, size)
    if banner is not None:
        _text_band(image, [banner.text], False, banner.color, 210, size)
    _draw_markers(image, markers, intrinsics, extrinsics, scale, size)  # on top: off-image ones sit on edges
    return image


def save_gif(frames: Sequence[Image.Image], durations_ms: Sequence[int], path: str | os.PathLike) -> Path:
    """Write an endlessly looping GIF atomically (a partial file never carries the final name)."""
    if not frames:
        raise ValueError("no frames to write")
    if len(durations_ms) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(durations_ms)} durations")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    frames[0].save(
        partial, format="GIF", save_all=True, append_images=list(frames[1:]),
        duration=[int(d) for d in durations_ms], loop=0,
    )  # fmt: skip
    partial.replace(path)
    return path


class AnnotatedVideo:
    """Frames of one camera with the annotations current when each arrived; rendered by :meth:`save`.

    Set ``caption`` (lines) and ``markers`` as the episode goes; :meth:`add` snapshots them with the frame.
    """

    def __init__(
        self,
        scale: int = DEFAULT_SCALE,
        every: int = DEFAULT_EVERY,
        frame_ms: int = DEFAULT_FRAME_MS,
        max_frames: int = MAX_FRAMES,
    ) -> None:
        if scale < 1 or every < 1 or frame_ms < 1 or max_frames < 2:
            raise ValueError(
                f"need scale, every, frame_ms >= 1 and max_frames >= 2, got {scale}, {every}, {frame_ms}, "
                f"{max_frames}"
            )
        self.scale, self.every, self.frame_ms, self.max_frames = scale, every, frame_ms, max_frames
        self.caption: list[str] = []
        self.markers: list[KeyframeMarker] = []
        self._frames: list[_Snapshot] = []
        self._offered = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def durations_ms(self) -> list[int]:
        return [s.duration_ms for s in self._frames]

    def add(self, frame: CameraFrame, force: bool = False) -> bool:
        """Offer a frame (standing for ``frame_ms``); every ``every``-th one is kept (any one when ``force``),
        the others lengthen the last kept one. True when kept."""
        self._offered += 1
        if self._frames and not force and (self._offered - 1) % self.every:
            self._lengthen()
            return False
        snapshot = _Snapshot(
            np.array(frame.rgb, dtype=np.uint8, copy=True), np.asarray(frame.intrinsics, dtype=np.float64),
            np.asarray(frame.extrinsics, dtype=np.float64), tuple(self.caption), tuple(self.markers),
            self.frame_ms,
        )  # fmt: skip
        if self._frames and self._frames[-1].banner is None and self._frames[-1].same_picture(snapshot):
            self._lengthen()  # nothing changed: show the previous frame longer
            return True
        self._frames.append(snapshot)
        if len(self._frames) >= self.max_frames:
            self._thin()
        return True

    def _lengthen(self) -> None:
        last = self._frames[-1]
        self._frames[-1] = replace(last, duration_ms=last.duration_ms + self.frame_ms)

    def _thin(self) -> None:
        """Halve the frame rate: merge each pair of frames (keeping the first picture, both durations)."""
        merged = []
        for i in range(0, len(self._frames), 2):
            pair = self._frames[i : i + 2]
            merged.append(replace(pair[0], duration_ms=sum(s.duration_ms for s in pair)))
        self._frames = merged
        self.every *= 2

    def finish(self, banner: Banner, hold_ms: int = HOLD_MS) -> None:
        """Append the final frame: the last picture with the current caption and markers and ``banner``,
        shown ``hold_ms``. Without any frame there is nothing to show it on (``save`` will refuse)."""
        if not self._frames:
            return
        last = self._frames[-1]
        self._frames.append(
            _Snapshot(last.rgb, last.intrinsics, last.extrinsics, tuple(self.caption), tuple(self.markers),
                      hold_ms, banner)
        )  # fmt: skip

    def render(self) -> list[Image.Image]:
        return [
            render_frame(s.rgb, s.intrinsics, s.extrinsics, s.caption, s.markers, s.banner, self.scale)
            for s in self._frames
        ]

    def save(self, path: str | os.PathLike) -> Path:
        """Render and write the GIF; ValueError when no frame was kept."""
        if not self._frames:
            raise ValueError(f"no frames were captured for {path}")
        return save_gif(self.render(), self.durations_ms, path)


def rollout_video_name(task: str, eval_seed: int, episode: int, success: bool) -> str:
    """``<task>_seed<s>_ep<i>_{success|failure}.gif`` (the outcome is in the name so failures are easy to
    list)."""
    return f"{task}_seed{eval_seed}_ep{episode}_{'success' if success else 'failure'}{GIF_SUFFIX}"


def outcome_banner(success: bool, steps: int, failure: str | None, message: str) -> Banner:
    """The final banner of a rollout: success, or the failure kind and its message."""
    if success:
        return Banner(f"SUCCESS after {steps} keyframe(s)", True)
    return Banner(f"FAILURE ({failure}) after {steps} keyframe(s): {message}", False)


class RolloutVideoRecorder(RolloutObserver):
    """Films one ``evaluate`` rollout: the front camera at every ``every``-th control tick, the instruction
    and keyframe index on top, every predicted keyframe projected, the outcome on the final frame.
    :meth:`on_end` writes the GIF to ``directory`` (:func:`rollout_video_name`) and sets :attr:`path`."""

    def __init__(
        self,
        directory: str | os.PathLike,
        max_steps: int,
        camera: str = VIDEO_CAMERA,
        scale: int = DEFAULT_SCALE,
        every: int = DEFAULT_EVERY,
    ) -> None:
        self.directory = Path(directory)
        self.max_steps = max_steps
        self.camera = camera
        self.video = AnnotatedVideo(scale=scale, every=every)
        self.path: Path | None = None
        self._title = ""

    wants_frames = True

    def on_start(self, info: EpisodeInfo, observation: Observation) -> None:
        self._title = f"{info.task} v{info.variation}: {info.instruction}"
        self.video.caption = [self._title, "reset"]
        self.video.add(observation.camera(self.camera), force=True)

    def on_keyframe(
        self, step: int, observation: Observation, action: KeyframeAction, e: np.ndarray | None = None
    ) -> None:
        gripper = "open" if action.gripper_open else "close"
        self.video.markers.append(KeyframeMarker.of(step, action))
        self.video.caption = [self._title, f"keyframe {step + 1}/{self.max_steps}: gripper {gripper}"]

    def on_frame(self, observation: Observation) -> None:
        self.video.add(observation.camera(self.camera))

    def on_end(self, outcome: EpisodeOutcome) -> None:
        """Write the GIF of the finished rollout."""
        self.video.finish(outcome_banner(outcome.success, outcome.steps, outcome.failure, outcome.message))
        name = rollout_video_name(outcome.task, outcome.eval_seed, outcome.episode, outcome.success)
        self.path = self.video.save(self.directory / name)
