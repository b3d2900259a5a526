"""``python -m framecache`` is the ``framecache`` command."""

from framecache.cli import main

main()
