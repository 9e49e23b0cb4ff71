"""``python -m mmar ...`` (used by ``torchrun -m mmar train ...``)."""

import sys

from mmar.cli import main

sys.exit(main())
