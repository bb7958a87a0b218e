"""Embedded RLBench-style simulator: PyBullet scene, RLBench cameras, keyframe control, tasks, data."""
