"""Full ROS 2 message definitions, as rosbag2 writes them into MCAP ``ros2msg`` schemas (ROS-free).

A recording stores raw CDR bytes, so a reader needs each type's definition *and* those of every type it
uses: the type's ``.msg`` text, then for each dependency (depth-first, each once) a line of 80 ``=``, a line
``MSG: <package>/<Type>`` and that type's ``.msg`` text (rosbag2's ``LocalMessageDefinitionSource`` format,
which ``mcap_ros2``, Foxglove and ``ros2 bag`` read). The ``.msg`` files are the ones the message packages
install under ``<prefix>/share/<package>/msg/`` (a sourced ROS 2 distro's ``AMENT_PREFIX_PATH``, else this
Python environment's prefix, where the ``ros-*`` wheels put them); fields are parsed with rosidl's own
parser (``rosidl_adapter``).
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from mirror_common.errors import MirrorError

SEPARATOR = "=" * 80


class MessageDefinitionError(MirrorError, LookupError):
    """A message type whose ``.msg`` file (or one of its dependencies') is not installed."""


def type_name_of(message_type: type) -> str:
    """``sensor_msgs/msg/Image`` for the rclpy class ``sensor_msgs.msg.Image``."""
    return f"{message_type.__module__.split('.')[0]}/msg/{message_type.__name__}"


def _split(type_name: str) -> tuple[str, str]:
    """``pkg/msg/Type`` or ``pkg/Type`` -> (pkg, Type)."""
    parts = type_name.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise MessageDefinitionError(f"{type_name!r} is not a message type name (package/msg/Type)")


def share_directories() -> list[Path]:
    """Where installed packages keep their ``share/<package>`` trees, in search order."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [Path(p) / "share" for p in [*prefixes, sys.prefix]]


def msg_file(package: str, name: str) -> Path:
    """The installed ``<package>/msg/<name>.msg``."""
    for share in share_directories():
        path = share / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    searched = ", ".join(str(s) for s in share_directories())
    raise MessageDefinitionError(f"no {package}/msg/{name}.msg under {searched}; is ros-{package} installed?")


def _dependencies(package: str, name: str, text: str) -> list[str]:
    """``pkg/Type`` of every non-primitive field type of a ``.msg`` text, in field order."""
    from rosidl_adapter.parser import parse_message_string

    spec = parse_message_string(package, name, text)
    found = []
    for field in spec.fields:
        if not field.type.is_primitive_type():
            found.append(f"{field.type.pkg_name or package}/{field.type.type}")
    return list(dict.fromkeys(found))


@cache
def message_definition(type_name: str) -> str:
    """The dependency-expanded definition of ``type_name`` (``pkg/msg/Type``), rosbag2's format."""
    package, name = _split(type_name)
    root = msg_file(package, name).read_text(encoding="utf-8")
    parts = [root]
    seen = {f"{package}/{name}"}
    stack = list(reversed(_dependencies(package, name, root)))
    while stack:
        dependency = stack.pop()
        if dependency in seen:
            continue
        seen.add(dependency)
        dep_package, dep_name = _split(dependency)
        text = msg_file(dep_package, dep_name).read_text(encoding="utf-8")
        parts.append(f"{SEPARATOR}\nMSG: {dependency}\n{text}")
        stack.extend(reversed(_dependencies(dep_package, dep_name, text)))
    return "\n".join(parts)
