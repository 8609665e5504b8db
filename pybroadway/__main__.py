"""``python -m pybroadway serve|epmd|ping|worker``: the same as the ``pybroadway`` command."""

import sys


def run() -> int:
    """The ``pybroadway`` command (:func:`pybroadway.cli.main`), imported here so that a Ctrl-C
    while it loads is one line too, not a traceback."""
    try:
        from pybroadway.cli import main
        return main()
    except KeyboardInterrupt:
        print("pybroadway: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
