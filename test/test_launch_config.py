"""launch/sim.launch.py, config/sim.yaml, setup.py and mirror_bringup's process table describe one stack.

The launch file cannot be imported here (launch/launch_ros are not on PyPI), so it is read with ``ast``: its
Node actions, launch arguments and environment must match :data:`mirror.ros.launch_config.NODES` and
:data:`~mirror.ros.launch_config.LAUNCH_ARGUMENTS`, which bringup uses to build its command lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mirror.ros import launch_config
from mirror.ros.launch_config import (
    DEFAULT_CHECKPOINT,
    LAUNCH_ARGUMENTS,
    NODES,
    ParamsFileError,
    coerce_argument,
    format_parameter_value,
    load_params_file,
    node_command,
    node_spec,
)
from mirror.ros.parameters import PERCEPTION_PARAMETERS, POLICY_PARAMETERS, loop_parameters

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "sim.launch.py"
PARAMS_FILE = REPO / "config" / "sim.yaml"


def _call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        func = node.func
        return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return ""


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == name]


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _launch_configuration(node: ast.AST) -> str:
    assert _call_name(node) == "LaunchConfiguration", ast.dump(node)
    return ast.literal_eval(node.args[0])


def parse_launch_file() -> dict:
    """Nodes, arguments and environment of the launch file, as plain data."""
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    constants = {
        n.targets[0].id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and n.targets[0].id.isupper()
    }
    package = constants["PACKAGE"]
    arguments = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        name = ast.literal_eval(call.args[0])
        default = _kw(call, "default_value")
        try:
            arguments[name] = ast.literal_eval(default)
        except ValueError:
            arguments[name] = None  # computed (params_file)
    environment = {}
    for call in _calls(tree, "SetEnvironmentVariable"):
        value = call.args[1]
        if _call_name(value) == "EnvironmentVariable":
            assert ast.literal_eval(value.args[0]) == ast.literal_eval(call.args[0])  # keeps a caller's value
            environment[ast.literal_eval(call.args[0])] = ast.literal_eval(_kw(value, "default_value"))
        else:
            environment[ast.literal_eval(call.args[0])] = ast.literal_eval(value)
    nodes = {}
    for call in _calls(tree, "Node"):
        pkg = _kw(call, "package")
        entry = {
            "package": package
            if isinstance(pkg, ast.Name) and pkg.id == "PACKAGE"
            else ast.literal_eval(pkg),
            "executable": ast.literal_eval(_kw(call, "executable")),
            "remappings": tuple(tuple(p) for p in ast.literal_eval(_kw(call, "remappings") or ast.List([]))),
            "shutdown_on_exit": _call_name(_kw(call, "on_exit")) == "Shutdown",
            "respawn": _kw(call, "respawn") is not None and ast.literal_eval(_kw(call, "respawn")),
            "respawn_delay": ast.unparse(_kw(call, "respawn_delay")) if _kw(call, "respawn_delay") else None,
        }
        parameters = _kw(call, "parameters")
        assert isinstance(parameters, ast.List)
        files = [p for p in parameters.elts if isinstance(p, ast.Name)]
        assert [f.id for f in files] == ["params_file"], "each node must read the parameter file first"
        assert isinstance(parameters.elts[0], ast.Name)
        overrides = {}
        for mapping in (p for p in parameters.elts if isinstance(p, ast.Dict)):
            for key, value in zip(mapping.keys, mapping.values):
                assert _call_name(value) == "ParameterValue", "overrides need ParameterValue(value_type=...)"
                value_type = _kw(value, "value_type")
                overrides[ast.literal_eval(key)] = (_launch_configuration(value.args[0]), value_type.id)
        entry["overrides"] = overrides
        nodes[ast.literal_eval(_kw(call, "name"))] = entry
    params_default = _kw(next(c for c in _calls(tree, "DeclareLaunchArgument")
                              if ast.literal_eval(c.args[0]) == "params_file"), "default_value")  # fmt: skip
    return {
        "package": package,
        "respawn_delay": constants["RESPAWN_DELAY"],
        "arguments": arguments,
        "environment": environment,
        "nodes": nodes,
        "params_default": ast.unparse(params_default),
        "params_reference": [_launch_configuration(n.value) for n in ast.walk(tree)
                             if isinstance(n, ast.Assign) and _call_name(n.value) == "LaunchConfiguration"],
    }  # fmt: skip


@pytest.fixture(scope="module")
def launch() -> dict:
    return parse_launch_file()


def test_launch_file_starts_the_nodes_of_the_bringup_table(launch):
    assert launch["package"] == launch_config.PACKAGE
    assert list(launch["nodes"]) == [spec.name for spec in NODES]  # same nodes, same start order
    for spec in NODES:
        node = launch["nodes"][spec.name]
        assert node["package"] == launch_config.PACKAGE
        assert node["executable"] == spec.executable
        assert node["remappings"] == spec.remappings
        assert node["shutdown_on_exit"] == spec.required, spec.name
        assert node["respawn"] == spec.respawn, spec.name  # both restart the same nodes
        assert node["respawn_delay"] == ("RESPAWN_DELAY" if spec.respawn else None), spec.name
        expected = {
            param: (arg, launch_config.launch_argument(arg).type.__name__) for param, arg in spec.overrides
        }
        assert node["overrides"] == expected, spec.name
    assert launch["respawn_delay"] == launch_config.RESPAWN_DELAY


def test_launch_arguments_match_bringup_options_and_default_to_the_yaml_values(launch):
    names = [a.name for a in LAUNCH_ARGUMENTS]
    assert list(launch["arguments"]) == [*names, "params_file"]
    assert launch["params_reference"] == ["params_file"]
    assert "config" in launch["params_default"] and launch_config.PARAMS_FILE_NAME in launch["params_default"]
    params = load_params_file(PARAMS_FILE)
    for spec in NODES:
        for parameter, argument in spec.overrides:
            default = coerce_argument(argument, launch["arguments"][argument])
            assert params[spec.name][parameter] == default, (spec.name, parameter, argument)
    assert launch["arguments"]["checkpoint"] == DEFAULT_CHECKPOINT


def test_launch_file_keeps_dds_discovery_on_localhost(launch):
    assert launch["environment"]["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert launch_config.child_environment({})["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    chosen = launch_config.child_environment({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert chosen["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"  # a caller's choice is kept, like the launch


def _declared_parameters() -> dict[str, dict[str, object]]:
    from sim_bridge.ros.bridge_node import _parameter_descriptors

    bridge = {name: default for name, (default, _) in _parameter_descriptors().items()}
    return {
        "sim_bridge": bridge,
        "policy": dict(POLICY_PARAMETERS),
        "perception": dict(PERCEPTION_PARAMETERS),
        "mirror_loop": loop_parameters(),
    }


def test_yaml_sets_only_declared_parameters_with_their_declared_types():
    params = load_params_file(PARAMS_FILE)
    declared = _declared_parameters()
    assert set(params) == set(declared)
    for node, values in params.items():
        unknown = sorted(set(values) - set(declared[node]))
        assert not unknown, f"{node} does not declare {unknown}"
        for name, value in values.items():
            assert type(value) is type(declared[node][name]), (node, name, value, declared[node][name])
    assert params["policy"]["checkpoint"] == params["perception"]["checkpoint"] == DEFAULT_CHECKPOINT


def test_setup_py_registers_every_executable_of_the_table():
    tree = ast.parse((REPO / "setup.py").read_text())
    setup = next(c for c in _calls(tree, "setup"))
    scripts = ast.literal_eval(_kw(setup, "entry_points"))["console_scripts"]
    entries = dict(tuple(part.strip() for part in s.split("=", 1)) for s in scripts)
    for spec in NODES:
        assert entries.get(spec.executable) == f"{spec.module}:main", spec.executable
    assert entries.get("mirror_bringup") == "mirror.ros.bringup:main"


def test_bringup_command_lines_pass_the_file_then_the_given_overrides(tmp_path):
    loop = node_spec("mirror_loop")
    command = node_command(loop, PARAMS_FILE, {"task": "", "episodes": 3, "backend": "bullet"})
    assert command[:3] == [sys.executable, "-m", loop.module]
    ros_args = command[command.index("--ros-args") + 1 :]
    assert ros_args == [
        "-r", "__node:=mirror_loop", "--params-file", str(PARAMS_FILE),
        "-p", 'tasks:=""', "-p", "episodes:=3",
    ]  # fmt: skip
    bridge = node_command(node_spec("sim_bridge"), PARAMS_FILE, {})
    assert "-p" not in bridge and bridge[-2:] == ["-r", "instruction:=ground_truth_instruction"]
    assert format_parameter_value("5") == '"5"' and format_parameter_value(True) == "true"
    with pytest.raises(ValueError, match="episodes must be int"):
        node_command(loop, PARAMS_FILE, {"episodes": "many"})
    with pytest.raises(KeyError, match="unknown launch argument"):
        node_command(loop, PARAMS_FILE, {"seed": 1})


def test_params_file_errors_are_clear(tmp_path):
    with pytest.raises(ParamsFileError, match="does not exist"):
        load_params_file(tmp_path / "missing.yaml")
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"policy": {"ros__parameters": {"checkpoint": "x"}}}))
    with pytest.raises(ParamsFileError, match=r"no parameters for node\(s\) \['sim_bridge', 'perception'"):
        load_params_file(partial)
    broken = tmp_path / "broken.yaml"
    broken.write_text("policy: [unclosed\n")
    with pytest.raises(ParamsFileError, match="cannot read"):
        load_params_file(broken)


def test_relative_data_paths_resolve_against_the_checkout(tmp_path):
    assert launch_config.checkout_root() == REPO
    assert launch_config.resolve_data_path("checkpoints/x") == REPO / "checkpoints" / "x"
    assert launch_config.resolve_data_path(tmp_path) == tmp_path
    assert launch_config.default_params_file() == PARAMS_FILE


def test_bringup_refuses_to_start_without_a_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mirror.ros.bringup", "--checkpoint", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "not a MirrorModel checkpoint directory" in result.stdout and str(tmp_path / "nope") in result.stdout
    )
    assert "started" not in result.stdout  # nothing was launched
