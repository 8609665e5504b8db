"""``python -m pybroadway.erldist.epmd serve|names|port-please``: run or query an EPMD."""

import sys

from pybroadway.erldist.epmd import main

sys.exit(main())
