"""``python -m vecstore_ref``: the same command line as the ``vecstore-ref`` script."""

import sys

from .cli import main

sys.exit(main())
