"""What every command-line entry point shares: logging and the error contract."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from common.errors import FramecacheError


def run_cli(main: Callable[[], int], quiet: bool = False) -> None:
    """Run ``main``; print a FramecacheError as one line without a traceback and exit 2."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        code = main()
    except FramecacheError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
