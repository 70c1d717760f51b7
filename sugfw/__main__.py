"""``python -m sugfw``: the ``sugfw`` command line."""

import sys

from sugfw.cli import main

sys.exit(main())
