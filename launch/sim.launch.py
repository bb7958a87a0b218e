"""Launch the Mirror stack: sim_bridge, policy, perception and mirror_loop.

    ros2 launch mirror_policy sim.launch.py
    ros2 launch mirror_policy sim.launch.py task:=push_buttons episodes:=10 checkpoint:=/abs/ckpt
    ros2 launch mirror_policy sim.launch.py videos:=/abs/videos record:=/abs/recordings

Every node reads config/sim.yaml (installed under share/mirror_policy/config); the launch arguments override
single parameters and default to the file's values. Relative checkpoint paths resolve against the share
directory when installed (against the repo root when run from a checkout). The launch ends when mirror_loop
finishes (``episodes:=0`` keeps the stack up until Ctrl-C).

Where the launch packages are missing (pip-only installs), ``mirror_bringup`` starts the same processes with
the same parameters; its process table (mirror/ros/launch_config.py) and this file are checked against
each other by test/test_launch_config.py, so keep the Node actions below literal.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "mirror_policy"
RESPAWN_DELAY = 2.0  # s; = mirror.ros.launch_config.RESPAWN_DELAY (test_launch_config checks)


def generate_launch_description():
    params_file = LaunchConfiguration("params_file")
    return LaunchDescription(
        [
            # DDS discovery stays on this machine unless the caller chose a range.
            SetEnvironmentVariable(
                "ROS_AUTOMATIC_DISCOVERY_RANGE",
                EnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", default_value="LOCALHOST"),
            ),
            # Busy-waiting OpenMP threads starve the simulator when models share a small machine.
            SetEnvironmentVariable(
                "OMP_WAIT_POLICY", EnvironmentVariable("OMP_WAIT_POLICY", default_value="PASSIVE")
            ),
            DeclareLaunchArgument(
                "task",
                default_value="",
                description="tasks the mirror loop draws from, comma-separated; empty: the vocabulary's",
            ),
            DeclareLaunchArgument(
                "backend",
                default_value="bullet",
                description="simulator backend: bullet (embedded) or rlbench (needs CoppeliaSim)",
            ),
            DeclareLaunchArgument(
                "checkpoint",
                default_value="checkpoints/mirror_cpu_small",
                description="MirrorModel checkpoint directory (relative: repo root / share dir)",
            ),
            DeclareLaunchArgument(
                "episodes",
                default_value="5",
                description="mirror-loop episodes; 0 keeps the stack up until Ctrl-C",
            ),
            DeclareLaunchArgument(
                "videos",
                default_value="",
                description="directory for one annotated GIF per mirror-loop episode; empty: none",
            ),
            DeclareLaunchArgument(
                "record",
                default_value="",
                description="directory for one MCAP recording per mirror-loop episode; empty: none",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(get_package_share_directory(PACKAGE), "config", "sim.yaml"),
                description="ROS 2 parameter file of all nodes",
            ),
            Node(
                package=PACKAGE,
                executable="sim_bridge_node",
                respawn=True,
                respawn_delay=RESPAWN_DELAY,
                name="sim_bridge",
                output="screen",
                parameters=[
                    params_file,
                    {"backend": ParameterValue(LaunchConfiguration("backend"), value_type=str)},
                ],
                remappings=[("instruction", "ground_truth_instruction")],
            ),
            Node(
                package=PACKAGE,
                executable="policy_node",
                respawn=True,
                respawn_delay=RESPAWN_DELAY,
                name="policy",
                output="screen",
                parameters=[
                    params_file,
                    {"checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str)},
                ],
            ),
            Node(
                package=PACKAGE,
                executable="perception_node",
                respawn=True,
                respawn_delay=RESPAWN_DELAY,
                name="perception",
                output="screen",
                parameters=[
                    params_file,
                    {"checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str)},
                ],
            ),
            Node(
                package=PACKAGE,
                executable="mirror_loop",
                name="mirror_loop",
                output="screen",
                parameters=[
                    params_file,
                    {
                        "tasks": ParameterValue(LaunchConfiguration("task"), value_type=str),
                        "episodes": ParameterValue(LaunchConfiguration("episodes"), value_type=int),
                        "videos": ParameterValue(LaunchConfiguration("videos"), value_type=str),
                        "record": ParameterValue(LaunchConfiguration("record"), value_type=str),
                    },
                ],
                on_exit=Shutdown(reason="mirror_loop finished"),
            ),
        ]
    )
