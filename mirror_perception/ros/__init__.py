"""ROS 2 side of perception: the ``perception`` node recognising demonstrated actions from the front camera.

:mod:`~mirror_perception.ros.recognized_action` and :mod:`~mirror_perception.ros.video_window` are ROS-free;
the node needs rclpy and the standard message packages.
"""
