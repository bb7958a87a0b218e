"""ROS 2 side of the simulator: the bridge node, its message conversions and the camera-set synchroniser.

Importing this package needs nothing; :mod:`~sim_bridge.ros.messages`, :mod:`~sim_bridge.ros.bridge_node`
and the subscription helpers need rclpy and the standard message packages (``pip install .[ros]`` or a
sourced ROS 2 distro). :mod:`~sim_bridge.ros.status`, :mod:`~sim_bridge.ros.episode` and
:mod:`~sim_bridge.ros.worker` are ROS-free.
"""
