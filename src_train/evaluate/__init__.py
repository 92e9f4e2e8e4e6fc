"""Scoring candidate nodules the way LUNA16 does: hits, FROC curve, CPM, bootstrap intervals.

* :mod:`.scoring` -- the hit rule, the per-scan cap, :func:`evaluate_froc`, :class:`FrocResult`;
* :mod:`.froc` -- the FROC curve as the official script computes it, its reading, the bootstrap;
* :mod:`.files` -- submission and series list files;
* :mod:`.report` -- the FROC CSV and plot;
* :mod:`.review_requests` -- requests for review from model results (hit rule applied).

Every center here is in world ``(x, y, z)`` millimetres; nothing touches voxel arrays.
"""

from src_train.evaluate.files import (
    SUBMISSION_COLUMNS,
    Candidate,
    find_series_list,
    read_series_list,
    read_submission,
)
from src_train.evaluate.froc import FROC_FP_RATES, FrocBootstrap
from src_train.evaluate.report import plot_froc, write_froc_csv
from src_train.evaluate.scoring import (
    MAX_MARKS_PER_SCAN,
    SENSITIVITY_TARGETS,
    FrocResult,
    counted_marks,
    evaluate_froc,
    nodule_hits,
    nodule_recall,
)

__all__ = [
    "FROC_FP_RATES",
    "MAX_MARKS_PER_SCAN",
    "SENSITIVITY_TARGETS",
    "SUBMISSION_COLUMNS",
    "Candidate",
    "FrocBootstrap",
    "FrocResult",
    "counted_marks",
    "evaluate_froc",
    "find_series_list",
    "nodule_hits",
    "nodule_recall",
    "plot_froc",
    "read_series_list",
    "read_submission",
    "write_froc_csv",
]
