"""Label QA: which annotations look wrong, most suspicious first (``lunaseg qa``).

Modules, in the order data flows through them:

* :mod:`.rows` -- the rows QA scores (the annotation file, or the reviewed list), their own
  columns exactly as given;
* :mod:`.signals` -- what an annotation looks like in its scan, measured on a box around it
  without any truth (growth, HU, the dense blob, the annotated sphere), and duplicates;
* :mod:`.model` -- what a CT checkpoint says there (probability, nearest candidate);
* :mod:`.combine` -- signals to a suspicion in [0, 1] and short reasons (a hand-set rule);
* :mod:`.folder` -- the loop over a folder's series and the files it writes;
* :mod:`.inject` -- label errors put into a synthetic folder at known rows (the benchmark's
  and the tests' ground truth).
"""

from src_train.qa.combine import REASONS, ModelSignals, QaRule, Verdict, judge, noisy_or
from src_train.qa.folder import (
    QA_COLUMNS,
    QA_DIR,
    SIGNALS_CSV,
    SUMMARY_TXT,
    SUSPICIOUS_CSV,
    QaProgress,
    QaResult,
    ScoredRow,
    SuspicionEntry,
    iter_qa,
    read_suspicious,
    run_qa,
    write_qa,
)
from src_train.qa.model import load_ct_detector, model_signals
from src_train.qa.rows import AnnotationList, AnnotationRow, annotation_rows
from src_train.qa.signals import NoduleSignals, duplicate_of, nodule_signals

__all__ = [
    "QA_COLUMNS",
    "QA_DIR",
    "REASONS",
    "SIGNALS_CSV",
    "SUMMARY_TXT",
    "SUSPICIOUS_CSV",
    "AnnotationList",
    "AnnotationRow",
    "ModelSignals",
    "NoduleSignals",
    "QaProgress",
    "QaResult",
    "QaRule",
    "ScoredRow",
    "SuspicionEntry",
    "Verdict",
    "annotation_rows",
    "duplicate_of",
    "iter_qa",
    "judge",
    "load_ct_detector",
    "model_signals",
    "nodule_signals",
    "noisy_or",
    "read_suspicious",
    "run_qa",
    "write_qa",
]
