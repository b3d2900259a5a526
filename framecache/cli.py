"""The ``framecache`` command (placeholder during the move)."""
def main():
    raise SystemExit(0)
