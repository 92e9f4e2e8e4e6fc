"""Inference: a trained model over whole series, candidate nodules, and whole-folder runs.

* :mod:`.runner` -- the model over every slice of one series (:func:`iter_inference`, a
  generator of progress; :func:`run_inference` drives it);
* :mod:`.tuner` -- threads / memory format / batch size picked by timing real batches;
* :mod:`.candidates` -- connected components of the mask as candidate nodules, their CSV;
* :mod:`.folder` -- :func:`infer_to_folder`, what ``lunaseg infer`` does.
"""

from src_train.infer.candidates import (
    CANDIDATE_COLUMNS,
    CandidateConfig,
    CandidateNodule,
    group_candidates,
    write_candidates_csv,
)
from src_train.infer.folder import (
    DEMO_CHECKPOINT,
    InferPlan,
    InferRunOptions,
    InferRunSummary,
    SeriesOutputs,
    SeriesReport,
    find_series,
    infer_to_folder,
    plan_run,
    prob_to_uint8,
    write_series_list,
)
from src_train.infer.runner import (
    DEFAULT_THRESHOLD,
    InferenceOptions,
    InferenceProgress,
    InferenceResult,
    InferenceSettings,
    iter_inference,
    run_inference,
)
from src_train.infer.tuner import Tuner, TunerCache

__all__ = [
    "CANDIDATE_COLUMNS",
    "DEFAULT_THRESHOLD",
    "DEMO_CHECKPOINT",
    "CandidateConfig",
    "CandidateNodule",
    "InferPlan",
    "InferRunOptions",
    "InferRunSummary",
    "InferenceOptions",
    "InferenceProgress",
    "InferenceResult",
    "InferenceSettings",
    "SeriesOutputs",
    "SeriesReport",
    "Tuner",
    "TunerCache",
    "find_series",
    "group_candidates",
    "infer_to_folder",
    "iter_inference",
    "plan_run",
    "prob_to_uint8",
    "run_inference",
    "write_candidates_csv",
    "write_series_list",
]
