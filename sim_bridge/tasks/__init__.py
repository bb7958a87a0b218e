"""Embedded RLBench tasks. Importing this package registers every task in :data:`base.TASKS`."""

from sim_bridge.tasks import (
    close_jar,  # noqa: F401
    insert_onto_square_peg,  # noqa: F401
    light_bulb_in,  # noqa: F401
    meat_off_grill,  # noqa: F401
    open_drawer,  # noqa: F401
    place_cups,  # noqa: F401
    place_shape_in_shape_sorter,  # noqa: F401
    place_wine_at_rack_location,  # noqa: F401
    push_buttons,  # noqa: F401
    put_groceries_in_cupboard,  # noqa: F401
    put_item_in_drawer,  # noqa: F401
    put_money_in_safe,  # noqa: F401
    reach_and_drag,  # noqa: F401
    slide_block_to_color_target,  # noqa: F401
    stack_blocks,  # noqa: F401
    stack_cups,  # noqa: F401
    sweep_to_dustpan_of_size,  # noqa: F401
    turn_tap,  # noqa: F401
)
from sim_bridge.tasks.base import TASKS, Task, Waypoint, make_task

__all__ = ["TASKS", "Task", "Waypoint", "make_task"]
