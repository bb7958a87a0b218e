"""JSON (de)serialisation of dataclasses and crash-safe file writes, shared by every package.

It lives in ``sim_bridge`` because both ``mirror_perception`` and ``mirror_policy`` may import it, while
``sim_bridge`` imports neither. Each caller passes its own error type, so a bad payload still raises the
typed error of the package it belongs to.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Self


def parse_json_object(text: str, what: str, error: type[Exception]) -> dict[str, Any]:
    """``text`` parsed as a JSON object; anything else raises ``error`` naming ``what``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def reject_unknown_fields(cls: type, data: Mapping[str, Any], what: str, error: type[Exception]) -> None:
    """Raise ``error`` when ``data`` has keys that are not fields of the dataclass ``cls`` (typos must not
    be silently dropped)."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise error(f"unknown {what} field(s): {unknown}")


def required_fields(cls: type, data: Mapping[str, Any], what: str, error: type[Exception]) -> dict[str, Any]:
    """The value of every field of the dataclass ``cls`` in ``data`` (extra keys ignored); a missing one
    raises ``error``. For messages, which always carry every field."""
    names = [f.name for f in fields(cls)]
    missing = sorted(set(names) - data.keys())
    if missing:
        raise error(f"{what} lacks {missing}")
    return {name: data[name] for name in names}


def parse_message(cls: type, text: str, what: str, error: type[Exception]) -> dict[str, Any]:
    """The fields of a JSON message of dataclass ``cls``, still to be type-checked by the caller."""
    return required_fields(cls, parse_json_object(text, what, error), what, error)


class JsonConfig:
    """Mixin for config dataclasses that define ``to_dict`` and ``from_dict``: indented, key-sorted JSON
    both ways.

    Subclasses set ``_json_what`` (how errors name the config) and ``_json_error`` (the error type) as plain,
    unannotated class attributes, so that they do not become dataclass fields.
    """

    _json_what = "config"
    _json_error: type[Exception] = ValueError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(parse_json_object(text, cls._json_what, cls._json_error))


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, fsync it, then rename it over ``path``
    (atomic on POSIX), so a crash or a full disk never leaves a half-written file under the real name."""
    path = Path(path)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # usual permissions under umask
    mode = os.stat(tmp).st_mode & 0o777
    try:
        write(tmp)
        os.chmod(tmp, mode)  # a writer that replaces the file (safetensors does, as 0600) keeps them too
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented, key-sorted JSON with a final newline."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
