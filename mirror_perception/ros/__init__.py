"""ROS-facing pieces of perception that need no model: the ``recognized_action`` message (JSON), the sliding
``video_window`` of camera frames and the ``topics`` it publishes on. The ``perception`` node itself loads a
mirror model, so it lives in the system layer (:mod:`mirror.ros.perception_node`)."""
