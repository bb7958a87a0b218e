"""ROS 2 side of the policy: the ``policy`` node, the ``mirror_loop`` driver and ``mirror_bringup``, which
starts the whole stack (its process table, :mod:`~mirror_policy.ros.launch_config`, is shared with
``launch/sim.launch.py``).

:mod:`~mirror_policy.ros.launch_config`, :mod:`~mirror_policy.ros.bringup`,
:mod:`~mirror_policy.ros.parameters`, :mod:`~mirror_policy.ros.policy_messages`,
:mod:`~mirror_policy.ros.task_selection` and :mod:`~mirror_policy.ros.loop_report` import no rclpy; the
nodes and :mod:`~mirror_policy.ros.acting` do.
"""
