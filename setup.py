"""ament_python packaging for Mirror: one ROS 2 package, five Python packages in layers (README, "Layers")."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mirror_policy"
RECORD = ["mcap>=1.1", "mcap-ros2-support>=0.5"]  # mirror_bringup --record: MCAP files of ROS 2 messages

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Mirror-neuron aligned ARP policy + ViCLIP perception on an embedded RLBench-style simulator",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "mirror",
            "mirror.*",
            "mirror_common*",
            "mirror_policy*",
            "mirror_perception*",
            "sim_bridge*",
        ]
    ),
    package_data={"mirror_perception": ["assets/*"], "sim_bridge": ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/checkpoints/mirror_cpu_small", glob("checkpoints/mirror_cpu_small/*")),
    ],
    install_requires=[
        "numpy>=1.24",
        "pillow>=9",
        "scipy>=1.10",
        "pybullet==3.2.7",
        "ompl==2.0.1",
        "torch>=2.3,<=2.14.1",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "pyyaml>=6",
        "scikit-learn>=1.3",
    ],
    extras_require={
        # A user with a sourced ROS 2 distro uses its rclpy; everyone else takes the PyPI wheels.
        "ros": [
            "ros-rclpy[fastrtps]",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-std-msgs",
            "ros-std-srvs",
            *RECORD,  # here too, so that scripts/setup_env.sh (which installs .[ros,test]) brings them
        ],
        "record": RECORD,
        # evaluate --point-clouds writes PLY files with open3d (a ~400 MB wheel, so not installed by default).
        "pointcloud": ["open3d"],
        "test": ["pytest>=7", "ruff>=0.6"],
        # RLBench backend: needs CoppeliaSim 4.1 installed by hand (see README).
        "rlbench": ["rlbench", "pyrep"],
    },
    entry_points={
        "console_scripts": [
            "generate_demos = sim_bridge.scripts.generate_demos:main",
            "replay_demos = sim_bridge.scripts.replay_demos:main",
            "keyframe_noise = sim_bridge.scripts.keyframe_noise:main",
            "inspect_dataset = sim_bridge.scripts.inspect_dataset:main",
            "train_joint = mirror.training.train_joint:main",
            "export_checkpoint = mirror.training.export:main",
            "evaluate = mirror.evaluation.evaluate:main",
            "learning_curve = mirror.evaluation.learning_curve:main",
            "keyframe_errors = mirror.evaluation.keyframe_errors:main",
            "video_camera_study = mirror.evaluation.video_camera_study:main",
            "mirror_study = mirror.evaluation.mirror_study:main",
            "alignment_hubs = mirror.evaluation.alignment_hubs:main",
            "compare_rollouts = mirror.evaluation.compare_rollouts:main",
            "sim_bridge_node = sim_bridge.ros.bridge_node:main",
            "policy_node = mirror.ros.policy_node:main",
            "perception_node = mirror.ros.perception_node:main",
            "mirror_loop = mirror.ros.mirror_loop:main",
            "mirror_bringup = mirror.ros.bringup:main",
        ],
    },
)
