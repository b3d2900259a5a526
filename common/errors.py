"""The one exception type for errors a user can cause."""


class FramecacheError(Exception):
    """An error the user can fix: bad CSV, missing file, wrong cache, and so on.

    The message says what went wrong and what to do. CLIs print it without a
    traceback and exit with status 2.
    """
