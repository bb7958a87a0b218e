"""One behaviour for every console script: the project's own errors end the command with one line on stderr
and exit code 2, never a traceback; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mirror_common.errors import MirrorError

EXIT_USAGE = 2  # bad input or a setting to fix, as argparse exits on a bad flag

Main = TypeVar("Main", bound=Callable[..., int])


def console_main(main: Main) -> Main:
    """Wrap a console script's ``main``: a :class:`MirrorError` that reaches it (a corrupt file deep in a
    loop, an unknown task) becomes ``<command>: error: <message>`` on stderr and exit code 2."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except MirrorError as err:
            sys.stderr.write(f"{Path(sys.argv[0]).name}: error: {err}\n")
            return EXIT_USAGE

    run.console_main = True  # marks the wrapped entry points (test_console_scripts)
    return run  # type: ignore[return-value]
