"""The detection threshold: the probability at or above which a voxel is in the predicted mask.

A run stores the threshold it validated at (``--detection-threshold``) in its contract and
checkpoints; inference, validation and the viewer apply a checkpoint's own threshold unless
told another. Checkpoints written before the option existed were all used at
:data:`PRE_OPTION_THRESHOLD`.
"""

from __future__ import annotations

from src_train.model import Checkpoint

#: Probability at or above which a voxel is in the mask, where nothing names another.
DEFAULT_THRESHOLD = 0.5

#: The threshold of every run and checkpoint written before ``--detection-threshold`` existed.
PRE_OPTION_THRESHOLD = 0.5

#: Key of the threshold in a run's options (contract) and a checkpoint's ``train_config``.
THRESHOLD_KEY = "detection_threshold"


def checkpoint_threshold(ckpt: Checkpoint) -> float:
    """The detection threshold a checkpoint's run used (``--detection-threshold`` in its
    ``train_config``; :data:`PRE_OPTION_THRESHOLD` for a checkpoint written without one)."""
    return float(ckpt.train_config.get(THRESHOLD_KEY, PRE_OPTION_THRESHOLD))
