"""``python -m src_train.train DATA_DIR --run-dir DIR ...``: the same as ``lunaseg train``.

This is the entry point for several processes: ``torchrun --nproc_per_node N -m src_train.train``.
"""

import sys

from src_train.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
