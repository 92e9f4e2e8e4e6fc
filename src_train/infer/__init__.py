"""Inference: a trained model over whole series, candidate nodules, and whole-folder runs.

* :mod:`.runner` -- the model over every slice of one series (:func:`iter_inference`, a
  generator of progress; :func:`run_inference` drives it);
* :mod:`.tuner` -- threads / memory format / batch size picked by timing real batches;
* :mod:`.candidates` -- connected components of the mask as candidate nodules, their CSV;
* :mod:`.detector` -- a checkpoint as a detector: segmenter, candidate ranker, its run's split;
* :mod:`.truth` -- what results are scored against, and on which series (``--split``);
* :mod:`.folder` -- :func:`infer_to_folder`, what ``lunaseg infer`` does: which series,
  against what truth, the loop over them;
* :mod:`.parts` -- which series one process takes (``--num-parts/--part-id``, torchrun);
* :mod:`.records` -- ``run.json`` and per-series records: resuming, refusing another run's
  settings, assembling the tables;
* :mod:`.outputs` -- the volumes a series leaves;
* :mod:`.events` -- the plan, progress events over the data set, the summary.
"""

from src_train.infer.candidates import (
    CANDIDATE_COLUMNS,
    CandidateConfig,
    CandidateNodule,
    group_candidates,
    write_candidates_csv,
)
from src_train.infer.detector import Detector, iter_detection, load_detector, run_detection
from src_train.infer.events import (
    InferEvent,
    InferPlan,
    InferRunSummary,
    SeriesFailure,
    SeriesReport,
)
from src_train.infer.folder import (
    DEMO_CHECKPOINT,
    InferRunOptions,
    RunScope,
    choose_scope,
    find_series,
    infer_to_folder,
    plan_run,
    run_settings,
)
from src_train.infer.outputs import SeriesOutputs, prob_to_uint8
from src_train.infer.parts import Part, resolve_part
from src_train.infer.records import write_series_list
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
    "Detector",
    "InferEvent",
    "InferPlan",
    "InferRunOptions",
    "InferRunSummary",
    "InferenceOptions",
    "InferenceProgress",
    "InferenceResult",
    "InferenceSettings",
    "Part",
    "RunScope",
    "SeriesFailure",
    "SeriesOutputs",
    "SeriesReport",
    "Tuner",
    "TunerCache",
    "choose_scope",
    "find_series",
    "group_candidates",
    "infer_to_folder",
    "iter_detection",
    "iter_inference",
    "load_detector",
    "plan_run",
    "prob_to_uint8",
    "resolve_part",
    "run_detection",
    "run_inference",
    "run_settings",
    "write_candidates_csv",
    "write_series_list",
]
