"""``python -m src_train.cli``: the same as the ``lunaseg`` console script."""

import sys

from src_train.cli import main

sys.exit(main())
