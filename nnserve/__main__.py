"""``python -m nnserve``: the ``nnserve`` command."""

import sys

from nnserve.cli import main

sys.exit(main())
