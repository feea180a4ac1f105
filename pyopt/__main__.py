"""``python -m pyopt``: the ``pyopt`` command line (see :mod:`pyopt.cli`)."""

import sys

from .cli import main

sys.exit(main())
