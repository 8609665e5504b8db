"""``python -m pybroadway serve|epmd|ping``: the same as the ``pybroadway`` command."""

import sys

from pybroadway.cli import main

sys.exit(main())
