"""Inference: a trained model over whole series and candidate nodules.

* :mod:`.runner` -- the model over every slice of one series (:func:`iter_inference`, a
  generator of progress; :func:`run_inference` drives it);
* :mod:`.tuner` -- threads / memory format / batch size picked by timing real batches;
* :mod:`.candidates` -- connected components of the mask as candidate nodules, their CSV;
* :mod:`.detector` -- a checkpoint as a detector: segmenter, candidate ranker, its run's split;
* :mod:`.ground_truth` -- voxel ground truth built as the checkpoint's run built it;
* :mod:`.parts` -- which series one process takes (``--num-parts/--part-id``, torchrun);
* :mod:`.records` -- ``run.json`` and per-series records: resuming, refusing another run's
  settings, assembling the tables;
* :mod:`.outputs` -- the volumes a series leaves;
* :mod:`.events` -- the plan, progress events over the data set, the summary.

What results are scored against (``--split``) and the candidate record are
:mod:`src_train.records`; the whole-folder run (``lunaseg infer``) is
:mod:`src_train.commands.infer_folder`.
"""

from src_train.infer.candidates import (
    CANDIDATE_COLUMNS,
    CandidateConfig,
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
from src_train.infer.outputs import SeriesOutputs, prob_to_uint8
from src_train.infer.parts import Part, resolve_part
from src_train.infer.records import write_series_list
from src_train.infer.runner import (
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
    "CandidateConfig",
    "Detector",
    "InferEvent",
    "InferPlan",
    "InferRunSummary",
    "InferenceOptions",
    "InferenceProgress",
    "InferenceResult",
    "InferenceSettings",
    "Part",
    "SeriesFailure",
    "SeriesOutputs",
    "SeriesReport",
    "Tuner",
    "TunerCache",
    "group_candidates",
    "iter_detection",
    "iter_inference",
    "load_detector",
    "prob_to_uint8",
    "resolve_part",
    "run_detection",
    "run_inference",
    "write_candidates_csv",
    "write_series_list",
]
