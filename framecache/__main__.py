"""``python -m framecache`` and the ``framecache`` command.

A Ctrl-C while the command is still importing its modules (before it has
started anything) ends it at once with exit code 130, as one during a run
does; Python's own handling would print a traceback from whatever import it
interrupted.
"""

import os
import signal


def run() -> None:
    """Import the command, then run it."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))  # nothing started yet: nothing to close
    from framecache.cli import main

    signal.signal(signal.SIGINT, previous)
    main()


if __name__ == "__main__":
    run()
