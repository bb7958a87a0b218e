"""ROS 2 infrastructure shared by every node: ``node_runtime`` (start, spin, clean shutdown) and ``qos``."""
