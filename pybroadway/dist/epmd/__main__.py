"""``python -m pybroadway.dist.epmd serve|names|port-please``: run or query an EPMD."""

import sys

from pybroadway.dist.epmd import main

sys.exit(main())
