"""PyBullet backend: the default embedded simulator."""
