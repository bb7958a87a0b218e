"""RLBench/PerAct on-disk format: codecs, safe pickles, atomic writing, reading both layouts, keyframes."""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim_bridge.cameras import (
    CAMERA_NAMES,
    RLBENCH_CAMERAS,
    calibration_from_misc,
    calibration_key,
    calibration_keys,
    look_at_extrinsics,
    tip_camera_extrinsics,
)
from sim_bridge.dataset import (
    DEPTH_SCALE,
    RLBenchDataset,
    decode_depth,
    decode_mask,
    depth_quantisation_bound,
    discover_keyframes,
    discover_keyframes_from_arrays,
    encode_depth,
    encode_mask,
    is_complete_episode,
    load_demo,
    load_episode,
    next_episode_index,
    read_png,
    safe_loads,
    write_episode,
    write_png,
)
from sim_bridge.dataset.codec import decode_normalised_depth, encode_normalised_depth
from sim_bridge.dataset.pickles import PickledDemo, rename_pickle_globals
from sim_bridge.errors import DatasetError, UnsafePickleError
from sim_bridge.observation import CameraFrame, Observation

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
DESCRIPTIONS = ["open the bottom drawer", "grip the bottom handle and pull the bottom drawer open"]


# ----------------------------------------------------------------------------------------------- fixtures


def make_observation(
    rng: np.random.Generator,
    size: int = SIZE,
    gripper_open: float = 1.0,
    joint_velocities: np.ndarray | None = None,
    noise: bool = True,
) -> Observation:
    """A frame with random images (depth between each camera's near and far, including both planes) and the
    real RLBench camera calibration."""
    position = rng.uniform([0.0, -0.3, 0.8], [0.5, 0.3, 1.3])
    quaternion = rng.normal(size=4)
    quaternion /= np.linalg.norm(quaternion)
    obs = Observation(
        cameras={},
        joint_positions=rng.uniform(-2, 2, 7),
        joint_velocities=rng.uniform(-1, 1, 7) if joint_velocities is None else joint_velocities,
        joint_forces=rng.normal(size=7),
        gripper_open=gripper_open,
        gripper_pose=np.concatenate([position, quaternion]),
        gripper_joint_positions=rng.uniform(0, 0.04, 2),
        gripper_touch_forces=rng.normal(size=6),
        task_low_dim_state=rng.normal(size=7),
        ignore_collisions=float(rng.integers(0, 2)),
        extra_misc={"variation_index": 1, "joint_position_action": rng.normal(size=8)},
    )
    for name in CAMERA_NAMES:
        spec = RLBENCH_CAMERAS[name]
        if spec.mounted_on_tip:
            extrinsics = tip_camera_extrinsics(spec, obs.gripper_matrix)
        else:
            extrinsics = look_at_extrinsics(np.array(spec.position), np.array(spec.axis))
        if noise:
            rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            depth = rng.uniform(spec.near, spec.far, (size, size)).astype(np.float32)
            depth[0, 0], depth[0, 1] = spec.near, spec.far
            mask = rng.integers(0, 2**24, (size, size)).astype(np.int32)
            mask[0, 0] = 0
        else:
            rgb = np.zeros((size, size, 3), np.uint8)
            depth = np.full((size, size), 1.0, np.float32)
            mask = np.zeros((size, size), np.int32)
        obs.cameras[name] = CameraFrame(
            rgb, depth, mask, spec.intrinsics(size), extrinsics, spec.near, spec.far
        )
    return obs


def make_episode(seed: int = 0, length: int = 5, size: int = SIZE, noisy_from: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    return [
        make_observation(rng, size, gripper_open=float(i < length // 2), noise=i >= noisy_from)
        for i in range(length)
    ]


def rng_state(seed: int = 3) -> tuple:
    return np.random.RandomState(seed).get_state()


def episode_path(root: Path, task: str = "open_drawer", index: int = 0) -> Path:
    return root / task / "all_variations" / "episodes" / f"episode{index}"


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Observation]]:
    observations = make_episode(length=5)
    path = episode_path(tmp_path)
    write_episode(path, observations, DESCRIPTIONS, variation=2, random_seed=rng_state())
    return path, observations


# ----------------------------------------------------------------------------------------------- codecs


def test_depth_codec_uses_rlbench_byte_layout_and_round_trips() -> None:
    d = np.array([[0.0, 1.0], [0x123456 / DEPTH_SCALE, 0.5]])
    rgb = encode_normalised_depth(d)
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0].tolist() == [0x12, 0x34, 0x56]  # R is the high byte
    assert rgb[1, 1].tolist() == [0x80, 0x00, 0x00]  # floor(0.5 * (2**24 - 1) + 0.5) = 0x800000
    random_d = np.random.default_rng(1).uniform(0, 1, (64, 64))
    assert (
        np.abs(decode_normalised_depth(encode_normalised_depth(random_d)) - random_d).max()
        <= 0.5 / DEPTH_SCALE
    )

    near, far = 0.01, 4.5
    metres = np.random.default_rng(2).uniform(near, far, (64, 64)).astype(np.float32)
    decoded = decode_depth(encode_depth(metres, near, far), near, far)
    assert decoded.dtype == np.float32
    bound = depth_quantisation_bound(near, far) + np.spacing(np.float32(far))
    assert np.abs(decoded.astype(np.float64) - metres).max() <= bound
    # Beyond the clip planes the camera saturates, and so does the encoding.
    clipped = decode_depth(encode_depth(np.array([[0.0, 99.0, np.inf]]), near, far), near, far)
    assert clipped[0].tolist() == pytest.approx([near, far, far])


def test_mask_codec_uses_r_plus_256g_plus_65536b() -> None:
    rgb = encode_mask(np.array([[0x030201, 0], [93, 2**24 - 1]]))
    assert rgb[0, 0].tolist() == [1, 2, 3]
    assert rgb[1, 0].tolist() == [93, 0, 0]
    handles = np.random.default_rng(3).integers(0, 2**24, (32, 32))
    decoded = decode_mask(encode_mask(handles))
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, handles)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: encode_depth(np.array([[1.0, np.nan]]), 0.01, 4.5), "NaN"),
        (lambda: encode_depth(np.ones((2, 2)), 4.5, 0.01), "clip planes"),
        (lambda: encode_mask(np.array([[-1, 0]])), "handles must lie"),
        (lambda: encode_mask(np.array([[2**24, 0]])), "handles must lie"),
        (lambda: encode_mask(np.ones((2, 2)) * 0.5), "integer"),
        (lambda: decode_mask(np.zeros((2, 2, 3), np.float32)), "uint8"),
    ],
)
def test_codecs_refuse_values_they_cannot_represent(call, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        call()


def test_png_round_trip_and_strict_reading(tmp_path: Path) -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_png(tmp_path / "a.png", (12, 20)), rgb)
    with pytest.raises(DatasetError, match="expected 10x10"):
        read_png(tmp_path / "a.png", (10, 10))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    with pytest.raises(DatasetError, match="mode 'L'"):
        read_png(tmp_path / "gray.png")
    with pytest.raises(DatasetError, match="missing image"):
        read_png(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------ write / read round trip


def test_write_then_read_round_trips_every_field(written: tuple[Path, list[Observation]]) -> None:
    path, originals = written
    assert is_complete_episode(path)
    for camera in CAMERA_NAMES:
        for kind in ("rgb", "depth", "mask"):
            assert sorted(p.name for p in (path / f"{camera}_{kind}").iterdir()) == [
                f"{i}.png" for i in range(5)
            ]
    episode = load_episode(path)
    assert (episode.task, episode.variation, episode.descriptions) == ("open_drawer", 2, DESCRIPTIONS)
    assert episode.length == 5 and episode.frame_indices == list(range(5))
    seed = episode.random_seed
    assert seed[0] == "MT19937" and seed[2:] == rng_state()[2:]
    np.testing.assert_array_equal(seed[1], rng_state()[1])

    for got, want in zip(episode.observations, originals, strict=True):
        assert sorted(got.cameras) == sorted(CAMERA_NAMES)
        for name in CAMERA_NAMES:
            g, w = got.cameras[name], want.cameras[name]
            np.testing.assert_array_equal(g.rgb, w.rgb)
            np.testing.assert_array_equal(g.mask, w.mask)
            assert g.rgb.dtype == np.uint8 and g.mask.dtype == np.int32 and g.depth.dtype == np.float32
            bound = depth_quantisation_bound(w.near, w.far) + np.spacing(np.float32(w.far))
            assert np.abs(g.depth.astype(np.float64) - w.depth).max() <= bound
            np.testing.assert_array_equal(g.intrinsics, w.intrinsics)
            np.testing.assert_array_equal(g.extrinsics, w.extrinsics)
            assert (g.near, g.far) == (w.near, w.far)
        for field in (
            "joint_positions",
            "joint_velocities",
            "joint_forces",
            "gripper_pose",
            "gripper_joint_positions",
            "gripper_touch_forces",
            "task_low_dim_state",
        ):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        np.testing.assert_allclose(got.gripper_matrix, want.gripper_matrix, atol=1e-12)
        assert got.gripper_open == want.gripper_open
        assert got.ignore_collisions == want.ignore_collisions
        assert got.extra_misc["variation_index"] == 1
        np.testing.assert_array_equal(
            got.extra_misc["joint_position_action"], want.extra_misc["joint_position_action"]
        )
    assert discover_keyframes(episode.observations) == discover_keyframes(originals)


def test_pickle_names_rlbench_classes_and_numpy1_reconstructors(written) -> None:
    path, _ = written
    data = (path / "low_dim_obs.pkl").read_bytes()
    assert data[:2] == b"\x80\x03"  # protocol 3, like RLBench
    names = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert names == {
        "rlbench.demo Demo",
        "rlbench.backend.observation Observation",
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    assert not [m for m in sys.modules if m == "rlbench" or m.startswith("rlbench.")]
    demo = load_demo(path / "low_dim_obs.pkl")
    first = demo[0]
    assert first.front_rgb is None and first.overhead_depth is None and first.wrist_point_cloud is None
    assert np.ndim(first.ignore_collisions) == 0 and demo.variation_number == 0
    assert len([k for k in first.misc if k.endswith(("_extrinsics", "_intrinsics", "_near", "_far"))]) == 16


def test_plain_pickle_with_real_rlbench_class_names_loads_our_files(written, tmp_path: Path) -> None:
    """What RLBench/PerAct do: ``pickle.load`` with ``rlbench`` importable. A minimal package with the two
    class names stands in for it; warnings are errors, so numpy.core names must resolve silently."""
    path, originals = written
    package = tmp_path / "fake_site" / "rlbench"
    (package / "backend").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "backend" / "__init__.py").write_text("")
    (package / "demo.py").write_text(
        "class Demo:\n    def __len__(self):\n        return len(self._observations)\n"
        "    def __getitem__(self, i):\n        return self._observations[i]\n"
    )
    (package / "backend" / "observation.py").write_text("class Observation:\n    pass\n")
    script = textwrap.dedent(
        f"""
        import json, pickle, sys, warnings
        warnings.simplefilter("error")
        sys.path.insert(0, {str(package.parent)!r})
        ep = {str(path)!r}
        demo = pickle.load(open(ep + "/low_dim_obs.pkl", "rb"))
        obs = demo[1]
        print(json.dumps({{
            "demo_type": type(demo).__module__ + "." + type(demo).__name__,
            "obs_type": type(obs).__module__ + "." + type(obs).__name__,
            "length": len(demo),
            "gripper_pose": obs.gripper_pose.tolist(),
            "front_near": obs.misc["front_camera_near"],
            "front_rgb": obs.front_rgb,
            "seed": demo.random_seed[0],
            "variation": pickle.load(open(ep + "/variation_number.pkl", "rb")),
            "descriptions": pickle.load(open(ep + "/variation_descriptions.pkl", "rb")),
        }}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["demo_type"] == "rlbench.demo.Demo"
    assert result["obs_type"] == "rlbench.backend.observation.Observation"
    assert result["length"] == 5 and result["seed"] == "MT19937" and result["front_rgb"] is None
    assert result["gripper_pose"] == originals[1].gripper_pose.tolist()
    assert result["front_near"] == RLBENCH_CAMERAS["front"].near
    assert (result["variation"], result["descriptions"]) == (2, DESCRIPTIONS)


def test_selected_frames_and_cameras_decode_nothing_else(written) -> None:
    path, originals = written
    # Corrupt images that a selective load must not touch; a full load must notice them.
    (path / "wrist_rgb" / "0.png").write_bytes(b"not a png")
    (path / "front_depth" / "2.png").write_bytes(b"not a png")
    episode = load_episode(path, cameras=("front", "left_shoulder"), frames=[4, 1])
    assert episode.frame_indices == [4, 1] and len(episode) == 2
    assert all(sorted(o.cameras) == ["front", "left_shoulder"] for o in episode.observations)
    np.testing.assert_array_equal(
        episode.observations[0].cameras["front"].rgb, originals[4].cameras["front"].rgb
    )
    # Calibration of cameras that were not loaded stays available in misc.
    assert "wrist_camera_extrinsics" in episode.observations[0].extra_misc
    low_dim = load_episode(path, cameras=(), frames=[3])
    assert low_dim.observations[0].cameras == {}
    np.testing.assert_array_equal(low_dim.observations[0].joint_positions, originals[3].joint_positions)
    with pytest.raises(DatasetError, match="front_depth/2.png"):
        load_episode(path, cameras=("front",))
    with pytest.raises(DatasetError, match="wrist_rgb/0.png"):
        load_episode(path)


# ----------------------------------------------------------------------------------------------- atomicity


def test_exception_mid_write_leaves_no_episode(tmp_path: Path) -> None:
    observations = make_episode(length=4)
    observations[3].cameras["wrist"].depth[5, 5] = np.nan  # fails while encoding the last frame
    path = episode_path(tmp_path)
    with pytest.raises(DatasetError, match="frame 3 camera wrist"):
        write_episode(path, observations, DESCRIPTIONS, variation=0)
    assert list(path.parent.iterdir()) == []  # neither the episode nor the temporary folder remains
    assert not is_complete_episode(path) and next_episode_index(path.parent) == 0
    with pytest.raises(DatasetError, match="no episodes"):
        RLBenchDataset(tmp_path)


def test_killed_write_leaves_only_a_temp_dir_that_the_next_write_removes(tmp_path: Path) -> None:
    """A real process death mid-write: the child may not write files over 1.5 kB, so the kernel kills it
    (SIGXFSZ) at the first incompressible PNG, after the small PNGs of frames 0 and 1 are on disk."""
    path = episode_path(tmp_path)
    script = textwrap.dedent(
        f"""
        import importlib.util, resource, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        spec = importlib.util.spec_from_file_location("fmt", {str(Path(__file__).resolve())!r})
        fmt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fmt)
        from sim_bridge.dataset import write_episode
        observations = fmt.make_episode(length=4, size=32, noisy_from=2)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, resource.RLIM_INFINITY))
        write_episode(__import__("pathlib").Path({str(path)!r}), observations, ["x"], 0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr
    leftovers = list(path.parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".episode0.tmp-")
    assert (leftovers[0] / "front_rgb" / "1.png").is_file()  # it really died mid-write
    assert not path.exists() and not is_complete_episode(leftovers[0])
    with pytest.raises(DatasetError, match="no episodes"):
        RLBenchDataset(tmp_path)

    assert next_episode_index(path.parent) == 0
    write_episode(path, make_episode(length=3), DESCRIPTIONS, variation=1)
    assert [p.name for p in path.parent.iterdir()] == ["episode0"]
    dataset = RLBenchDataset(tmp_path)
    assert len(dataset) == 1 and dataset[0].length == 3 and dataset.skipped == []


def test_episodes_are_never_overwritten_and_indices_skip_gaps(written) -> None:
    path, _ = written
    before = (path / "low_dim_obs.pkl").read_bytes()
    with pytest.raises(DatasetError, match="already exists"):
        write_episode(path, make_episode(seed=9, length=2), ["other"], variation=0)
    assert (path / "low_dim_obs.pkl").read_bytes() == before
    (path.parent / "episode7").mkdir()
    assert next_episode_index(path.parent) == 8
    assert next_episode_index(path.parent / "missing") == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"descriptions": []}, "descriptions"),
        ({"descriptions": "open the drawer"}, "descriptions"),
        ({"variation": -1}, "variation"),
        ({"observations": []}, "at least one"),
        ({"name": "ep0"}, "episode<N>"),
    ],
)
def test_write_refuses_bad_arguments_before_touching_disk(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"observations": make_episode(length=2), "descriptions": DESCRIPTIONS, "variation": 0}
    name = kwargs.pop("name", "episode0")
    args.update(kwargs)
    with pytest.raises(DatasetError, match=match):
        write_episode(tmp_path / "episodes" / name, **args)
    assert not (tmp_path / "episodes").exists()


def test_write_refuses_images_that_disagree_with_intrinsics(tmp_path: Path) -> None:
    observations = make_episode(length=2)
    frame = observations[1].cameras["front"]
    frame.rgb = frame.rgb[:8]
    with pytest.raises(DatasetError, match="frame 1 camera front"):
        write_episode(episode_path(tmp_path), observations, DESCRIPTIONS, 0)


# ---------------------------------------------------------------------------------------------- safe pickles


class _CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def _demo_with_misc_value(value) -> bytes:
    demo = PickledDemo()
    demo.__dict__.update(_observations=[], random_seed=None, misc=value)
    raw = pickle.dumps(demo, protocol=3)
    return rename_pickle_globals(raw, {(PickledDemo.__module__, "PickledDemo"): ("rlbench.demo", "Demo")})


@pytest.mark.parametrize(
    ("data", "refused"),
    [
        (b"cos\nsystem\n(S'touch /tmp/mirror_pwned'\ntR.", "os.system"),
        (pickle.dumps(_CallsEval(), protocol=3), "builtins.eval"),
        (pickle.dumps(_CallsEval(), protocol=5), "builtins.eval"),
        (_demo_with_misc_value(subprocess.Popen), "subprocess.Popen"),
        (_demo_with_misc_value({1, 2}), "builtins.set"),
    ],
)
def test_restricted_unpickler_refuses_everything_off_the_allow_list(data: bytes, refused: str) -> None:
    with pytest.raises(UnsafePickleError, match=refused.replace(".", r"\.")):
        safe_loads(data)
    assert not Path("/tmp/mirror_pwned").exists()


def test_restricted_unpickler_accepts_demos_with_numpy1_or_numpy2_names(written) -> None:
    path, originals = written
    data = (path / "low_dim_obs.pkl").read_bytes()
    as_numpy2 = rename_pickle_globals(
        data, {("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct")}
    )
    assert b"numpy._core.multiarray" in as_numpy2 and b"numpy.core.multiarray" not in as_numpy2
    for blob in (data, as_numpy2):
        demo = safe_loads(blob)
        assert len(demo) == 5
        np.testing.assert_array_equal(demo[2].joint_forces, originals[2].joint_forces)
    scalar = pickle.dumps({"x": np.float32(1.5), "n": np.int64(3)}, protocol=3)
    assert safe_loads(scalar) == {"x": 1.5, "n": 3}
    assert safe_loads(
        rename_pickle_globals(
            scalar, {("numpy._core.multiarray", "scalar"): ("numpy.core.multiarray", "scalar")}
        )
    ) == {"x": 1.5, "n": 3}


# ------------------------------------------------------------------------------------------- corrupt files


def _replace_with_png(path: Path, size: int) -> None:
    write_png(path, np.zeros((size, size, 3), np.uint8))


def _replace_with_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())


CORRUPTIONS = {
    "truncated pickle": (
        lambda p: (p / "low_dim_obs.pkl").write_bytes((p / "low_dim_obs.pkl").read_bytes()[:500]),
        "not a readable pickle",
    ),
    "garbage pickle": (lambda p: (p / "low_dim_obs.pkl").write_bytes(b"\x00garbage" * 10), "not a readable"),
    "pickle of another type": (
        lambda p: (p / "low_dim_obs.pkl").write_bytes(pickle.dumps([1, 2])),
        "does not hold an RLBench Demo",
    ),
    "missing low-dim pickle": (lambda p: (p / "low_dim_obs.pkl").unlink(), "has no low_dim_obs.pkl"),
    "variation is a string": (
        lambda p: (p / "variation_number.pkl").write_bytes(pickle.dumps("two")),
        "non-negative int",
    ),
    "missing frame": (lambda p: (p / "front_depth" / "3.png").unlink(), "front_depth has 4 images"),
    "extra frame": (
        lambda p: shutil.copy(p / "front_mask" / "0.png", p / "front_mask" / "5.png"),
        "front_mask has 6 images but the demo has 5",
    ),
    "wrong image size": (lambda p: _replace_with_png(p / "wrist_rgb" / "1.png", 8), "expected 16x16"),
    "truncated png": (
        lambda p: (p / "left_shoulder_depth" / "2.png").write_bytes(
            (p / "left_shoulder_depth" / "2.png").read_bytes()[:60]
        ),
        "corrupt or unreadable PNG",
    ),
    "jpeg instead of png": (lambda p: _replace_with_jpeg(p / "right_shoulder_mask" / "0.png"), "not a PNG"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_episodes_raise_clear_dataset_errors(written, name: str) -> None:
    path, _ = written
    corrupt, match = CORRUPTIONS[name]
    corrupt(path)
    with pytest.raises(DatasetError, match=match) as info:
        load_episode(path)
    assert not isinstance(info.value, UnsafePickleError)


def test_bad_requests_raise_clear_dataset_errors(written, tmp_path: Path) -> None:
    path, _ = written
    with pytest.raises(DatasetError, match="unknown camera 'overhead'"):
        load_episode(path, cameras=("front", "overhead"))
    with pytest.raises(DatasetError, match=r"frames \[5\] are outside"):
        load_episode(path, frames=[0, 5])
    with pytest.raises(DatasetError, match="does not exist"):
        RLBenchDataset(tmp_path / "no_such_root")
    with pytest.raises(DatasetError, match="does not exist"):
        load_episode(tmp_path / "no_such_episode0")


# -------------------------------------------------------------------------------------------------- layouts


def test_both_layouts_are_discovered(tmp_path: Path) -> None:
    root = tmp_path / "train"
    for index in (0, 1):  # PerAct: descriptions and variation number inside each episode
        write_episode(
            episode_path(root, "open_drawer", index), make_episode(index, 3), DESCRIPTIONS, 2 - index
        )
    staging = tmp_path / "staging" / "episodes" / "episode4"
    write_episode(staging, make_episode(7, 4), ["push the maroon button"], variation=0)
    upstream_variation = root / "push_buttons" / "variation3"  # upstream: variation in the folder name
    (upstream_variation / "episodes").mkdir(parents=True)
    staging.rename(upstream_variation / "episodes" / "episode4")
    upstream_episode = upstream_variation / "episodes" / "episode4"
    (upstream_episode / "variation_number.pkl").unlink()
    (upstream_episode / "variation_descriptions.pkl").rename(
        upstream_variation / "variation_descriptions.pkl"
    )
    (root / "push_buttons" / "variation3" / "episodes" / ".episode9.tmp-1-ab").mkdir()  # ignored

    dataset = RLBenchDataset(root)
    assert dataset.tasks == ["open_drawer", "push_buttons"]
    summary = [(r.task, r.variation, r.index, r.length, r.layout, r.descriptions[0]) for r in dataset]
    assert summary == [
        ("open_drawer", 2, 0, 3, "peract", DESCRIPTIONS[0]),
        ("open_drawer", 1, 1, 3, "peract", DESCRIPTIONS[0]),
        ("push_buttons", 3, 4, 4, "upstream", "push the maroon button"),
    ]
    assert [r.index for r in dataset.episodes("open_drawer", variation=1)] == [1]
    upstream = dataset.load(2, cameras=("wrist",), frames=[3])
    assert (upstream.task, upstream.variation, upstream.descriptions) == (
        "push_buttons",
        3,
        ["push the maroon button"],
    )
    assert is_complete_episode(upstream_episode)
    with pytest.raises(DatasetError, match="not in"):
        dataset.episodes("stack_blocks")


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: (p / "variation_descriptions.pkl").write_bytes(pickle.dumps([])),
        lambda p: (p / "variation_descriptions.pkl").write_bytes(pickle.dumps({"a": 1})),
        lambda p: (p / "variation_descriptions.pkl").write_bytes(b"\x00not a pickle"),
        lambda p: (p / "variation_descriptions.pkl").unlink(),
    ],
    ids=["empty list", "dict", "garbage", "missing"],
)
@pytest.mark.faults
def test_an_episode_with_bad_descriptions_loads_without_instructions(tmp_path: Path, damage, caplog) -> None:
    """RLBench never reads variation_descriptions.pkl: the rest of the episode stays usable."""
    path = episode_path(tmp_path, index=0)
    write_episode(path, make_episode(length=2), DESCRIPTIONS, 0)
    damage(path)
    dataset = RLBenchDataset(tmp_path)
    assert len(dataset) == 1 and dataset.skipped == [] and dataset[0].descriptions == ()
    assert "kept without instructions" in caplog.text
    episode = load_episode(path)
    assert episode.descriptions == [] and len(episode.observations) == 2


@pytest.mark.faults
def test_a_root_whose_episodes_were_all_skipped_says_how_many_and_why(tmp_path: Path) -> None:
    for index in (0, 1):
        write_episode(episode_path(tmp_path, index=index), make_episode(length=2), DESCRIPTIONS, 0)
        (episode_path(tmp_path, index=index) / "variation_number.pkl").unlink()
    with pytest.raises(
        DatasetError, match=r"all 2 episode folder\(s\) .* skipped; first reasons: episode0: "
    ):
        RLBenchDataset(tmp_path)


def test_discovery_skips_incomplete_episodes_with_a_reason(tmp_path: Path) -> None:
    write_episode(episode_path(tmp_path, index=0), make_episode(length=2), DESCRIPTIONS, 0)
    write_episode(episode_path(tmp_path, index=1), make_episode(length=2), DESCRIPTIONS, 0)
    (episode_path(tmp_path, index=1) / "variation_number.pkl").unlink()
    dataset = RLBenchDataset(tmp_path)
    assert [r.index for r in dataset] == [0]
    assert len(dataset.skipped) == 1 and "variation" in dataset.skipped[0][1]


# ------------------------------------------------------------------------------------------------ keyframes


def _moving(n: int, still: range = range(0), speed: float = 0.0) -> np.ndarray:
    v = np.full((n, 7), 0.5)
    v[list(still)] = speed
    return v


def _gripper(n: int, closed: range = range(0)) -> np.ndarray:
    g = np.ones(n)
    g[list(closed)] = 0.0
    return g


@pytest.mark.parametrize(
    ("velocities", "gripper", "expected"),
    [
        (_moving(10), _gripper(10), [9]),  # only the last frame
        (_moving(10), _gripper(10, range(4, 10)), [4, 9]),  # gripper closes at 4
        (_moving(20, range(8, 13)), _gripper(20), [8, 19]),  # stop; the buffer hides frames 9..12
        (_moving(20, range(8, 14)), _gripper(20), [8, 13, 19]),  # buffer ran out at 13
        (_moving(20, range(8, 13), 0.1), _gripper(20), [8, 19]),  # |v| <= 0.1 counts as stopped
        (_moving(20, range(8, 13), 0.1001), _gripper(20), [19]),
        (_moving(10), _gripper(10, range(8, 10)), [9]),  # 8 and 9 adjacent: second-to-last dropped
        (_moving(10), _gripper(10, range(5, 8)), [5, 9]),  # 5, 8, 9 -> 8 dropped
        (_moving(10, range(8, 9)), _gripper(10), [9]),  # never a stop at the second-to-last frame
        (_moving(10, range(7, 8)), _gripper(10), [7, 9]),
        (_moving(20, range(9, 12)), _gripper(20, range(10, 20)), [10, 19]),  # gripper unsteady around 10
        # Wrap-around quirk: frames 0..3 are still. The gripper state at the end is read as frames -1/-2.
        (_moving(10, range(0, 4)), _gripper(10), [9]),  # stop at 0 (not a keyframe) arms the buffer
        (_moving(10, range(0, 4)), _gripper(10, range(9, 10)), [2, 9]),  # end differs: no stop at 0 or 1
        (np.zeros((0, 7)), np.zeros(0), []),
        (np.zeros((1, 7)), np.ones(1), []),
    ],
)
def test_keyframe_discovery_matches_peract(
    velocities: np.ndarray, gripper: np.ndarray, expected: list
) -> None:
    assert discover_keyframes_from_arrays(velocities, gripper) == expected


def test_keyframes_from_observations_equal_keyframes_from_arrays() -> None:
    rng = np.random.default_rng(5)
    velocities, gripper = _moving(12, range(3, 5)), _gripper(12, range(6, 12))
    observations = [
        make_observation(rng, 8, gripper_open=g, joint_velocities=v) for v, g in zip(velocities, gripper)
    ]
    assert (
        discover_keyframes(observations) == discover_keyframes_from_arrays(velocities, gripper) == [3, 6, 11]
    )
    with pytest.raises(DatasetError, match="joint velocities"):
        discover_keyframes_from_arrays(np.zeros((3, 7)), np.zeros(4))


# ------------------------------------------------------------------------ calibration from ``misc``
def _misc(camera: str = "front", **changes: object) -> dict[str, object]:
    spec = RLBENCH_CAMERAS[camera]
    misc = {
        calibration_key(camera, "intrinsics"): spec.intrinsics(),
        calibration_key(camera, "extrinsics"): np.eye(4),
        calibration_key(camera, "near"): spec.near,
        calibration_key(camera, "far"): spec.far,
    }
    misc.update({calibration_key(camera, k): v for k, v in changes.items()})
    return misc


def test_calibration_is_read_from_misc_once_for_the_reader_and_the_rlbench_backend() -> None:
    calibration = calibration_from_misc(_misc(), "front", DatasetError)
    assert calibration.intrinsics.shape == (3, 3) and calibration.extrinsics.shape == (4, 4)
    assert calibration.near == RLBENCH_CAMERAS["front"].near
    assert calibration_keys(["front"]) == set(_misc())
    flat = calibration_from_misc(
        _misc(intrinsics=RLBENCH_CAMERAS["front"].intrinsics().ravel()), "front", KeyError
    )
    assert np.array_equal(flat.intrinsics, calibration.intrinsics)  # pickles may hold flat lists


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"near": "close"}, "near is not numeric"),
        ({"extrinsics": np.eye(3)}, "extrinsics 4x4"),
        ({"far": 0.0}, "0 <= near < far"),
        ({"far": [1.0, 2.0]}, "one number each"),
        ({"intrinsics": np.full((3, 3), np.nan)}, "NaN"),
    ],
)
def test_bad_calibration_is_refused_naming_the_key(changes: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        calibration_from_misc(_misc(**changes), "front", DatasetError, "ep0: frame 3")
    misc = _misc()
    del misc["front_camera_far"]
    with pytest.raises(ValueError, match="ep0: frame 3 misc has no 'front_camera_far'"):
        calibration_from_misc(misc, "front", ValueError, "ep0: frame 3")


@pytest.mark.faults
def test_inspect_dataset_reports_an_unsafe_pickle_in_one_line_and_exit_code_2(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from sim_bridge.scripts.inspect_dataset import main

    path = episode_path(tmp_path, index=0)
    write_episode(path, make_episode(length=2), DESCRIPTIONS, 0)
    (path / "low_dim_obs.pkl").write_bytes(b"cos\nsystem\n(S'touch /tmp/mirror_pwned_inspect'\ntR.")
    monkeypatch.setattr(sys, "argv", ["inspect_dataset"])
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inspect_dataset: error: ") and "os.system" in err and "Traceback" not in err
    assert err.count("\n") == 1 and not Path("/tmp/mirror_pwned_inspect").exists()
