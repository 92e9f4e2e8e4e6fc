"""The file names of a ``lunaseg infer`` output folder, in one place: what inference writes,
``lunaseg eval`` finds beside the candidates and the viewer opens.

``OUT/`` holds, per series, ``<uid>_prob.mhd`` (uint8 ``round(p * 255)``), ``<uid>_pred.mhd``
(the mask, uint8 0/1) and, with ground truth, ``<uid>_error.mhd`` (1 TP, 2 FN, 3 FP); for the
run, ``candidates.csv`` (a LUNA16 submission with extra columns), ``seriesuids.csv`` (the
series scored) and ``run.json`` (the settings, to resume or refuse another run's).
"""

from __future__ import annotations

#: The run's candidates: a LUNA16 submission file with extra columns.
CANDIDATES_CSV = "candidates.csv"

#: The series a run processed, one UID per line, beside ``candidates.csv`` (for ``lunaseg eval``).
SERIES_LIST_NAME = "seriesuids.csv"

#: The run's settings and per-series records (resume, refuse another run's settings).
RUN_FILE = "run.json"

#: Endings of a series' volumes: probability, predicted mask, errors against ground truth.
PROB_SUFFIX = "_prob.mhd"
PRED_SUFFIX = "_pred.mhd"
ERROR_SUFFIX = "_error.mhd"


def series_file_name(series_uid: str, suffix: str) -> str:
    """``<seriesuid><suffix>``, e.g. ``series_file_name(uid, PRED_SUFFIX)``."""
    return f"{series_uid}{suffix}"
