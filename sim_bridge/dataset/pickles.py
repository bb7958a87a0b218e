"""RLBench's pickles without rlbench: a restricted loader and a writer that real RLBench/PerAct code can read.

Reading. Pickles can run arbitrary code, so :class:`RestrictedUnpickler` resolves exactly the names that
RLBench demos use (research/rlbench.md section 2): ``rlbench.demo.Demo`` and
``rlbench.backend.observation.Observation`` (mapped to the plain stand-ins :class:`PickledDemo` and
:class:`PickledObservation`; pickles rebuild them with ``cls.__new__`` + a state dict, so no RLBench code is
needed) and numpy's array/dtype/scalar reconstructors under both ``numpy.core.multiarray`` (numpy 1.x) and
``numpy._core.multiarray`` (numpy 2.x). Any other name raises :class:`UnsafePickleError`.

Writing. The stand-ins must appear in the file as ``rlbench.demo.Demo`` / ``rlbench.backend.observation.
Observation``, but the standard pickler only writes a class name after importing that module and finding the
very same object there. Rather than planting fake ``rlbench`` modules in ``sys.modules`` for the duration of
the call (visible to other threads, and wrong if the real package is importable), we pickle normally with
protocol 3 and then rename the ``GLOBAL`` opcodes in the byte stream (:func:`rename_pickle_globals`).
Protocol 3 has no framing and memo entries are numbered, not addressed, so renaming an opcode's text is a
local, exact edit. The same pass renames numpy 2's ``numpy._core.multiarray`` to ``numpy.core.multiarray``,
which numpy 1.x (PerAct's environment) needs and numpy 2.x still resolves, without a warning, for old pickles.
The renamed stream is finally checked to reference only allow-listed names, so whatever we write our own
reader accepts.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim_bridge.dataset.layout import RLBENCH_CAMERA_NAMES
from sim_bridge.errors import DatasetError, UnsafePickleError
from sim_bridge.observation import Observation

PICKLE_PROTOCOL = 3  # RLBench's files are protocol 3; it is also the newest protocol without framing
RLBENCH_DEMO = ("rlbench.demo", "Demo")
RLBENCH_OBSERVATION = ("rlbench.backend.observation", "Observation")
_POINT_CLOUD_KIND = "point_cloud"


class PickledDemo:
    """Stand-in for ``rlbench.demo.Demo``: ``_observations``, ``random_seed``, ``variation_number``."""

    _observations: list[PickledObservation]

    def __len__(self) -> int:
        return len(self._observations)

    def __getitem__(self, index: int) -> PickledObservation:
        return self._observations[index]


class PickledObservation:
    """Stand-in for ``rlbench.backend.observation.Observation``; its attributes are whatever the pickle set
    (older upstream pickles lack ``ignore_collisions`` and ``misc``, so read them with ``getattr``)."""


def _numpy_multiarray() -> Any:
    # Import numpy 2's module directly: resolving through the numpy.core shim would work but is deprecated.
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        import numpy._core.multiarray as multiarray
    else:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as multiarray
    return multiarray


def _allowed_names() -> dict[tuple[str, str], Any]:
    multiarray = _numpy_multiarray()
    allowed: dict[tuple[str, str], Any] = {
        RLBENCH_DEMO: PickledDemo,
        RLBENCH_OBSERVATION: PickledObservation,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _allowed_names()

# Names our pickler writes -> names the file must carry.
_WRITE_RENAMES: dict[tuple[str, str], tuple[str, str]] = {
    (PickledDemo.__module__, PickledDemo.__qualname__): RLBENCH_DEMO,
    (PickledObservation.__module__, PickledObservation.__qualname__): RLBENCH_OBSERVATION,
    ("numpy._core.multiarray", "_reconstruct"): ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"): ("numpy.core.multiarray", "scalar"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only RLBench Demo/Observation and numpy arrays "
                "are allowed"
            ) from None


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; a malformed stream is a :class:`DatasetError`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except Exception as exc:  # any failure to rebuild objects from untrusted bytes means a corrupt file
        raise DatasetError(f"{source} is not a readable pickle ({type(exc).__name__}: {exc})") from exc


def load_pickle(path: Path) -> Any:
    """Safely unpickle a file; a missing file is a :class:`DatasetError`."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"missing file {path}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    return safe_loads(data, str(path))


def load_demo(path: Path) -> PickledDemo:
    """Load ``low_dim_obs.pkl`` and check that it really holds a Demo of Observations."""
    demo = load_pickle(path)
    observations = getattr(demo, "_observations", None) if isinstance(demo, PickledDemo) else None
    if not isinstance(observations, list):
        raise DatasetError(f"{path} does not hold an RLBench Demo (got {type(demo).__name__})")
    for i, obs in enumerate(observations):
        if not isinstance(obs, PickledObservation):
            raise DatasetError(f"{path}: frame {i} is a {type(obs).__name__}, not an RLBench Observation")
    return demo


def load_descriptions(path: Path) -> list[str]:
    """Load ``variation_descriptions.pkl``: a non-empty list of str, element 0 the canonical instruction."""
    descriptions = load_pickle(path)
    if (
        not isinstance(descriptions, list)
        or not descriptions
        or not all(isinstance(d, str) for d in descriptions)
    ):
        raise DatasetError(f"{path} must hold a non-empty list of str, got {descriptions!r:.80}")
    return descriptions


def load_variation_number(path: Path) -> int:
    """Load ``variation_number.pkl`` (a non-negative int)."""
    number = load_pickle(path)
    if isinstance(number, np.integer):
        number = int(number)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise DatasetError(f"{path} must hold a non-negative int, got {number!r:.80}")
    return number


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle stream references, in order."""
    names = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "INST"):
            module, name = arg.split(" ", 1)
            names.append((module, name))
        elif opcode.name == "STACK_GLOBAL":
            raise DatasetError("STACK_GLOBAL names are only known at load time; write protocol <= 3")
    return names


def rename_pickle_globals(data: bytes, renames: dict[tuple[str, str], tuple[str, str]]) -> bytes:
    """Rewrite the ``GLOBAL`` opcodes of a protocol <= 3 pickle according to ``renames``."""
    ops = list(pickletools.genops(data))
    out = bytearray()
    copied = 0
    for (opcode, arg, pos), (_, _, next_pos) in zip(ops, [*ops[1:], (None, None, len(data))]):
        if opcode.name == "FRAME" or opcode.name == "STACK_GLOBAL":
            raise DatasetError("cannot rename globals in a protocol >= 4 pickle")
        if opcode.name != "GLOBAL":
            continue
        module, name = arg.split(" ", 1)
        if (module, name) not in renames:
            continue
        new_module, new_name = renames[(module, name)]
        out += data[copied:pos]
        out += pickle.GLOBAL + f"{new_module}\n{new_name}\n".encode()
        copied = next_pos
    out += data[copied:]
    return bytes(out)


def demo_to_bytes(demo: PickledDemo) -> bytes:
    """Pickle a demo so that it names RLBench's classes and numpy 1.x-compatible reconstructors."""
    try:
        raw = pickle.dumps(demo, protocol=PICKLE_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise DatasetError(f"observation data cannot be pickled: {exc}") from exc
    data = rename_pickle_globals(raw, _WRITE_RENAMES)
    refused = [f"{m}.{n}" for m, n in pickle_globals(data) if (m, n) not in ALLOWED_GLOBALS]
    if refused:
        raise DatasetError(
            f"observation data references {sorted(set(refused))}, which RLBench readers cannot load; "
            "keep extra_misc and random_seed to numbers, strings, lists, tuples, dicts and numpy arrays"
        )
    return data


def _float_vector(value: Any, field: str, size: int | None = None) -> np.ndarray:
    v = np.array(value, dtype=np.float64).reshape(-1)
    if size is not None and v.shape != (size,):
        raise DatasetError(f"observation field {field} must have {size} values, got shape {np.shape(value)}")
    return v


def observation_to_pickled(obs: Observation) -> PickledObservation:
    """Our Observation -> RLBench Observation fields, images stripped as RLBench does on disk."""
    out = PickledObservation()
    state: dict[str, Any] = {}
    for camera in (*RLBENCH_CAMERA_NAMES, *(c for c in obs.cameras if c not in RLBENCH_CAMERA_NAMES)):
        for kind in ("rgb", "depth", "mask", _POINT_CLOUD_KIND):
            state[f"{camera}_{kind}"] = None
    pose = _float_vector(obs.gripper_pose, "gripper_pose", 7)
    if not np.all(np.isfinite(pose)) or np.linalg.norm(pose[3:]) < 1e-9:
        raise DatasetError(f"gripper_pose must be finite with a non-zero quaternion, got {pose}")
    state.update(
        joint_velocities=_float_vector(obs.joint_velocities, "joint_velocities"),
        joint_positions=_float_vector(obs.joint_positions, "joint_positions"),
        joint_forces=_float_vector(obs.joint_forces, "joint_forces"),
        gripper_open=float(obs.gripper_open),
        gripper_pose=pose,
        gripper_matrix=np.array(obs.gripper_matrix, dtype=np.float64),
        gripper_joint_positions=_float_vector(obs.gripper_joint_positions, "gripper_joint_positions"),
        gripper_touch_forces=_float_vector(obs.gripper_touch_forces, "gripper_touch_forces"),
        task_low_dim_state=_float_vector(obs.task_low_dim_state, "task_low_dim_state"),
        ignore_collisions=np.array(float(obs.ignore_collisions), dtype=np.float64),  # 0-d, as the PerAct fork
        misc=_plain_misc(obs),
    )
    out.__dict__.update(state)
    return out


def _plain_misc(obs: Observation) -> dict[str, Any]:
    misc = obs.misc()
    for camera, frame in obs.cameras.items():
        misc[f"{camera}_camera_extrinsics"] = np.array(frame.extrinsics, dtype=np.float64)
        misc[f"{camera}_camera_intrinsics"] = np.array(frame.intrinsics, dtype=np.float64)
        misc[f"{camera}_camera_near"] = float(frame.near)
        misc[f"{camera}_camera_far"] = float(frame.far)
    return misc


def build_demo(observations: Sequence[Observation], random_seed: Any = None) -> PickledDemo:
    """A Demo as RLBench writes it; ``variation_number`` stays 0 in the pickle (the real value lives in
    ``variation_number.pkl``), ``random_seed`` is numpy's legacy RNG state tuple or None."""
    demo = PickledDemo()
    demo.__dict__.update(
        _observations=[observation_to_pickled(o) for o in observations],
        random_seed=random_seed,
        num_reset_attempts=None,
        variation_number=0,
    )
    return demo


def dump_demo(path: Path, observations: Sequence[Observation], random_seed: Any = None) -> None:
    Path(path).write_bytes(demo_to_bytes(build_demo(observations, random_seed)))


def dump_descriptions(path: Path, descriptions: Sequence[str]) -> None:
    Path(path).write_bytes(pickle.dumps([str(d) for d in descriptions], protocol=PICKLE_PROTOCOL))


def dump_variation_number(path: Path, variation: int) -> None:
    Path(path).write_bytes(pickle.dumps(int(variation), protocol=PICKLE_PROTOCOL))
