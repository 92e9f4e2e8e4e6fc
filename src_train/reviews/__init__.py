"""Reviewers' verdicts on nodules, and the reviewed ground truth they make.

Files, in ``DATA/reviews/`` (append-only, written atomically under a lock)::

    reviews.csv              seriesuid,coordX,coordY,coordZ,diameter_mm,status,label,reviewer,
                             time_utc,note   (world mm; status accepted/rejected/corrected/added,
                             or undone when Undo withdrew a verdict)
    <seriesuid>_labels.mhd   uint16 in the CT's geometry: a corrected row's nodule is exactly
                             the voxels equal to its label

A nodule is its series and annotated center (within 0.5 mm); its latest row wins. Modules, in
the order data flows through them:

* :mod:`.rows` -- a row (:class:`Review`), the statuses, histories per nodule, matching;
* :mod:`.files` -- reading ``reviews.csv`` (tolerant) and appending to it (lock + rename);
* :mod:`.labels` -- label volumes: load checked against the CT, paint, undo patches;
* :mod:`.book` -- :class:`ReviewBook`: one data set's reviews, read once;
* :mod:`.apply` -- the reviewed ground truth of a series (masks, nodules, counts);
* :mod:`.record` -- recording a verdict or a correction, and undo;
* :mod:`.summary` / :mod:`.export` -- progress per status and reviewer; the LUNA16-style CSV;
* :mod:`.effects` -- each verdict's effect on Dice against true shapes (synthetic data).

Requests for review from a model's results (false positives, missed nodules) apply the
LUNA16 hit rule: :mod:`src_train.evaluate.review_requests`.
"""

from src_train.reviews.apply import (
    REVIEW_METHOD,
    ReviewedNodule,
    ReviewedSeries,
    apply_book,
    apply_reviews,
    pair_reviews,
    reviewed_nodules,
)
from src_train.reviews.book import ReviewBook
from src_train.reviews.effects import VerdictEffect, score_reviewed, verdict_effects
from src_train.reviews.export import (
    EXPORT_COLUMNS,
    EXPORT_CSV,
    export_reviewed_annotations,
    reviewed_annotation_rows,
)
from src_train.reviews.files import (
    LABELS_SUFFIX,
    REVIEWS_CSV,
    REVIEWS_DIR,
    ReviewsRead,
    append_reviews,
    labels_file_name,
    read_reviews,
    reviews_dir,
    reviews_lock,
)
from src_train.reviews.folder import ReviewedFolder
from src_train.reviews.labels import LabelPatch, load_labels
from src_train.reviews.record import UndoEntry, record_correction, record_verdict, undo
from src_train.reviews.rows import (
    ACCEPTED,
    ADDED,
    CORRECTED,
    KEPT_STATUSES,
    REJECTED,
    REVIEW_COLUMNS,
    SAME_NODULE_MM,
    STATUSES,
    UNDONE,
    VERDICTS,
    NoduleHistory,
    Review,
    find_history,
    match_histories,
    nodule_histories,
    same_nodule_index,
)
from src_train.reviews.summary import ReviewProgress, SeriesProgress, review_progress

__all__ = [
    "ACCEPTED",
    "ADDED",
    "CORRECTED",
    "EXPORT_COLUMNS",
    "EXPORT_CSV",
    "KEPT_STATUSES",
    "LABELS_SUFFIX",
    "REJECTED",
    "REVIEWS_CSV",
    "REVIEWS_DIR",
    "REVIEW_COLUMNS",
    "REVIEW_METHOD",
    "SAME_NODULE_MM",
    "STATUSES",
    "UNDONE",
    "VERDICTS",
    "LabelPatch",
    "NoduleHistory",
    "Review",
    "ReviewBook",
    "ReviewProgress",
    "ReviewedFolder",
    "ReviewedNodule",
    "ReviewedSeries",
    "ReviewsRead",
    "SeriesProgress",
    "UndoEntry",
    "VerdictEffect",
    "append_reviews",
    "apply_book",
    "apply_reviews",
    "export_reviewed_annotations",
    "find_history",
    "labels_file_name",
    "load_labels",
    "match_histories",
    "nodule_histories",
    "pair_reviews",
    "read_reviews",
    "record_correction",
    "record_verdict",
    "review_progress",
    "reviewed_annotation_rows",
    "reviewed_nodules",
    "reviews_dir",
    "reviews_lock",
    "same_nodule_index",
    "score_reviewed",
    "undo",
    "verdict_effects",
]
