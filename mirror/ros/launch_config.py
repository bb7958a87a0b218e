"""The Mirror stack's process table: which nodes run, from which module, with which parameter overrides.

One table serves three readers: ``mirror_bringup`` (starts the nodes as ``python -m <module>`` processes),
``launch/sim.launch.py`` (the same nodes as launch_ros ``Node`` actions; it cannot import this module, so
``test/test_launch_config.py`` parses it and checks it against this table) and ``config/sim.yaml`` (one
``<node>: ros__parameters:`` block per node).

Launch arguments map to node parameters (``task`` -> mirror_loop ``tasks``, ``backend`` -> sim_bridge
``backend``, ``checkpoint`` -> policy and perception ``checkpoint``, ``episodes``, ``videos`` and ``record``
-> mirror_loop's parameters of the same names); their defaults are the values in ``config/sim.yaml``, so
leaving an argument out and passing its default are the same thing.

Relative data paths (the checkpoint) resolve against the repository root when the code runs from a checkout
(``setup.py`` next to the package), otherwise against the installed share directory
``<prefix>/share/mirror_policy`` (ament index when available).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mirror_common.errors import MirrorError

PACKAGE = "mirror_policy"
PARAMS_FILE_NAME = "sim.yaml"
LAUNCH_FILE_NAME = "sim.launch.py"
DEFAULT_CHECKPOINT = "checkpoints/mirror_cpu_small"
# The bridge publishes the simulator's own (ground-truth) instruction on ``instruction``; in the Mirror stack
# that topic belongs to the mirror loop (the *recognised* instruction), so the bridge's copy is moved here.
GROUND_TRUTH_INSTRUCTION_TOPIC = "ground_truth_instruction"


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    type: type  # str or int: how the value is passed as a parameter
    description: str


@dataclass(frozen=True)
class NodeSpec:
    """One process of the stack."""

    name: str  # node name = key in the parameter file
    executable: str  # console entry point (what ``ros2 launch`` runs)
    module: str  # ``python -m`` module (what ``mirror_bringup`` runs)
    overrides: tuple[tuple[str, str], ...] = ()  # (parameter, launch argument)
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = False  # its exit ends the stack; bringup returns its exit code
    respawn: bool = False  # restarted when it dies (bringup: bounded, with back-off; launch: respawn=True)


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("task", str, "tasks the mirror loop draws from, comma-separated; empty: the vocabulary's"),
    LaunchArgument("backend", str, "simulator backend: bullet (embedded) or rlbench (needs CoppeliaSim)"),
    LaunchArgument("checkpoint", str, "MirrorModel checkpoint directory (relative: repo root / share dir)"),
    LaunchArgument("episodes", int, "mirror-loop episodes; 0 keeps the stack up until Ctrl-C"),
    LaunchArgument("videos", str, "directory for one annotated GIF per mirror-loop episode; empty: none"),
    LaunchArgument("record", str, "directory for one MCAP recording per mirror-loop episode; empty: none"),
)

NODES: tuple[NodeSpec, ...] = (
    NodeSpec(
        "sim_bridge",
        "sim_bridge_node",
        "sim_bridge.ros.bridge_node",
        overrides=(("backend", "backend"),),
        remappings=(("instruction", GROUND_TRUTH_INSTRUCTION_TOPIC),),
        respawn=True,
    ),
    NodeSpec(
        "policy",
        "policy_node",
        "mirror.ros.policy_node",
        overrides=(("checkpoint", "checkpoint"),),
        respawn=True,
    ),
    NodeSpec(
        "perception",
        "perception_node",
        "mirror.ros.perception_node",
        overrides=(("checkpoint", "checkpoint"),),
        respawn=True,
    ),
    NodeSpec(
        "mirror_loop",
        "mirror_loop",
        "mirror.ros.mirror_loop",
        overrides=(("tasks", "task"), ("episodes", "episodes"), ("videos", "videos"), ("record", "record")),
        required=True,
    ),
)


RESPAWN_DELAY = 2.0  # s before a dead node is restarted (bringup doubles it for each further restart)
MAX_RESPAWNS = 3  # bringup gives a node up after this many restarts


def launch_argument(name: str) -> LaunchArgument:
    for argument in LAUNCH_ARGUMENTS:
        if argument.name == name:
            return argument
    raise KeyError(f"unknown launch argument {name!r}; expected one of {[a.name for a in LAUNCH_ARGUMENTS]}")


def node_spec(name: str) -> NodeSpec:
    for spec in NODES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown node {name!r}; the stack has {[s.name for s in NODES]}")


# -- paths -------------------------------------------------------------------------------------------------


def checkout_root() -> Path | None:
    """The repository root when this code runs from a source checkout (editable install), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "setup.py").is_file() and (root / "package.xml").is_file() else None


def share_directory() -> Path:
    """``share/mirror_policy`` of the installation (ament index if it knows the package, else sys.prefix)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, LookupError, OSError, ValueError):  # OSError: no AMENT_PREFIX_PATH
            pass
    except ImportError:
        pass
    return Path(sys.prefix) / "share" / PACKAGE


def data_root() -> Path:
    """What relative data paths are relative to: the checkout root, else the share directory."""
    root = checkout_root()
    return root if root is not None else share_directory()


def resolve_data_path(path: str | os.PathLike) -> Path:
    """Absolute paths (and ``~``) as given; relative ones against :func:`data_root`."""
    expanded = Path(os.path.expanduser(str(path)))
    return expanded if expanded.is_absolute() else data_root() / expanded


def default_params_file() -> Path:
    return data_root() / "config" / PARAMS_FILE_NAME


# -- parameter files and command lines ---------------------------------------------------------------------


class ParamsFileError(MirrorError, ValueError):
    """A parameter file that is missing, is not YAML, or lacks a node's ``ros__parameters`` block."""


def load_params_file(path: str | os.PathLike) -> dict[str, dict]:
    """``{node: {parameter: value}}`` of a ROS 2 parameter file, checked to cover every node of the stack."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ParamsFileError(f"parameter file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ParamsFileError(f"cannot read parameter file {path}: {err}") from err
    if not isinstance(data, dict):
        raise ParamsFileError(f"{path} must map node names to ros__parameters blocks")
    params: dict[str, dict] = {}
    for key, block in data.items():
        name = str(key).lstrip("/")
        if not isinstance(block, dict) or not isinstance(block.get("ros__parameters"), dict):
            raise ParamsFileError(f"{path}: node {name!r} needs a 'ros__parameters:' mapping")
        params[name] = dict(block["ros__parameters"])
    missing = [spec.name for spec in NODES if spec.name not in params]
    if missing:
        raise ParamsFileError(f"{path} has no parameters for node(s) {missing}")
    return params


def format_parameter_value(value: object) -> str:
    """A ``-p name:=value`` value: YAML scalars, strings always quoted (so '' and '5' stay strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"unsupported parameter value {value!r} ({type(value).__name__})")


def coerce_argument(name: str, value: object) -> object:
    """A launch argument's value as its parameter type (ValueError with the argument's name otherwise)."""
    argument = launch_argument(name)
    try:
        return argument.type(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"launch argument {name} must be {argument.type.__name__}, got {value!r}") from err


def node_command(
    spec: NodeSpec, params_file: str | os.PathLike, arguments: dict[str, object] | None = None
) -> list[str]:
    """``python -m <module> --ros-args ...`` for a node: its name, the parameter file, the overrides of the
    launch arguments given in ``arguments`` (others keep the file's values) and its remappings."""
    arguments = arguments or {}
    unknown = sorted(set(arguments) - {a.name for a in LAUNCH_ARGUMENTS})
    if unknown:
        raise KeyError(f"unknown launch argument(s) {unknown}")
    command = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    command += ["--params-file", str(params_file)]
    for parameter, argument in spec.overrides:
        if argument in arguments and arguments[argument] is not None:
            value = coerce_argument(argument, arguments[argument])
            command += ["-p", f"{parameter}:={format_parameter_value(value)}"]
    for source, target in spec.remappings:
        command += ["-r", f"{source}:={target}"]
    return command


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the stack's processes: loopback-only DDS discovery unless the caller chose a
    range, passive OpenMP waits (busy-waiting threads starve the simulator on small machines), unbuffered
    output so log lines appear as they happen."""
    env = dict(os.environ if base is None else base)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
