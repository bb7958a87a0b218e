"""ROS 2 side of the policy: the ``policy`` node, the ``mirror_loop`` driver and ``mirror_bringup``, which
starts the whole stack (its process table, :mod:`~mirror.ros.launch_config`, is shared with
``launch/sim.launch.py``).

:mod:`~mirror.ros.launch_config`, :mod:`~mirror.ros.bringup`,
:mod:`~mirror.ros.parameters`, :mod:`~mirror.ros.policy_messages`,
:mod:`~mirror.ros.task_selection` and :mod:`~mirror.ros.loop_report` import no rclpy; the
nodes and :mod:`~mirror.ros.acting` do.
"""
