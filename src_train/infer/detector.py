"""A checkpoint as a detector: the segmenter, its candidate ranker and the run it came from.

:func:`load_detector` reads what a checkpoint carries beyond the weights: the ranker (second
stage, :mod:`src_train.classify`), the run's data contract (training / validation series, for
``--split`` and the viewer's warning) and its ground-truth definition (mask method and
threshold). :func:`iter_detection` is :func:`~src_train.infer.runner.iter_inference` followed by
the ranker, so every front end (``lunaseg infer``, the viewer, validation) ranks alike.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from src_train.classify.ranker import RANKER_KEY, Ranker
from src_train.ct import CtVolume
from src_train.errors import CheckpointError
from src_train.infer.candidates import most_probable
from src_train.infer.ground_truth import TruthDefinition
from src_train.infer.runner import (
    InferenceOptions,
    InferenceProgress,
    InferenceResult,
    iter_inference,
)
from src_train.infer.tuner import TunerCache
from src_train.model import Checkpoint, ModelConfig, load_checkpoint, model_of_checkpoint
from src_train.progress import Progress, ShouldStop, run_steps
from src_train.records.contract import DataContract, contract_of_checkpoint
from src_train.records.spacing import spacing_warning
from src_train.records.threshold import DEFAULT_THRESHOLD, checkpoint_threshold

log = logging.getLogger(__name__)


@dataclass
class Detector:
    """A loaded checkpoint ready to run (see the module docstring).

    Attributes:
        model: the segmentation model (eval mode, on the asked device).
        model_config: its hyper-parameters.
        path: the checkpoint file.
        contract: the run's data contract; None for a checkpoint without run information.
        truth: how the run built its ground truth from points.
        ranker: the second stage; None ranks by the segmenter's score.
        epoch: the checkpoint's epoch.
        threshold: the probability threshold its run validated and fitted the second stage
            with (``--detection-threshold``): the mask threshold of inference unless the
            options name another.
    """

    model: nn.Module
    model_config: ModelConfig
    path: Path
    contract: DataContract | None = None
    truth: TruthDefinition = dataclasses.field(default_factory=TruthDefinition)
    ranker: Ranker | None = None
    epoch: int = 0
    threshold: float = DEFAULT_THRESHOLD

    def spacing_warning(self, ct: CtVolume) -> str | None:
        """A warning line when ``ct``'s spacing is far outside what the run trained on
        (:func:`~src_train.records.spacing.spacing_warning`); None when within it or when the
        checkpoint records no training spacing."""
        if self.contract is None or not self.contract.train_spacing_mm:
            return None
        context = self.contract.options.get("context_slices")
        return spacing_warning(
            self.contract.train_spacing_mm,
            ct.canonical()[0].geometry.spacing_irc_mm,
            ct.series_uid,
            self.path.name,
            int(context) if context is not None else None,
            self.model_config.context_mm,
        )

    def split_of(self, series_uid: str) -> str | None:
        """``"train"``, ``"val"`` or None (unknown to the run, or no run information)."""
        return self.contract.split_of(series_uid) if self.contract is not None else None

    def describe(self) -> str:
        """One line: the model, its epoch and how candidates are ranked."""
        c = self.model_config
        rank = self.ranker.describe() if self.ranker else "ranked by the segmenter's score"
        context = (
            f"context every {c.context_mm:g} mm" if c.context_mm is not None else "voxel context"
        )
        return (
            f"{self.path.name}: {c.arch} depth {c.depth}, {c.filters} filters, {context}, "
            f"epoch {self.epoch}; detection threshold {self.threshold:g}; {rank}"
        )

    def options_for(self, options: InferenceOptions | None) -> InferenceOptions:
        """``options`` (default ones when None) with this checkpoint's threshold where they
        name none."""
        return with_threshold(options or InferenceOptions(), self.threshold)


def with_threshold(options: InferenceOptions, threshold: float) -> InferenceOptions:
    """``options`` with ``threshold`` as the mask threshold where they name none."""
    if options.threshold is None:
        return dataclasses.replace(options, threshold=threshold)
    return options


#: Key of ``Checkpoint.extra`` that 2-D image-set checkpoints (``lunaseg compare``) carry.
IMAGE_SIZE_KEY = "image_size"


def check_ct_input(ckpt: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint whose input is not a stack of CT slices: a 2-D image model (RGB
    channels) or one whose channels differ from its run's ``2 x context_slices + 1``."""
    channels = ckpt.model_config.in_channels
    if IMAGE_SIZE_KEY in ckpt.extra:
        raise CheckpointError(
            f"{path} is a 2-D image model ({channels} input channels, RGB; written by lunaseg "
            "compare on an image set): it cannot run on CT series. Pass a CT checkpoint "
            "(lunaseg train), or run it on an image folder in the viewer."
        )
    context = ckpt.train_config.get("context_slices")
    if context is not None and channels != 2 * int(context) + 1:
        raise CheckpointError(
            f"{path} takes {channels} input channels but its run used {context} context "
            f"slices ({2 * int(context) + 1} channels): the file is inconsistent; retrain it."
        )


def load_detector(path: str | os.PathLike[str], device: str = "cpu") -> Detector:
    """Read a checkpoint as a :class:`Detector` (:class:`CheckpointError` for a bad file)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    check_ct_input(ckpt, path)
    model = model_of_checkpoint(ckpt, device)
    state: Any = ckpt.extra.get(RANKER_KEY)
    ranker = Ranker.from_state(state, str(path)) if isinstance(state, dict) else None
    detector = Detector(
        model=model,
        model_config=ckpt.model_config,
        path=Path(path),
        contract=contract_of_checkpoint(ckpt),
        truth=TruthDefinition.of_train_config(ckpt.train_config),
        ranker=ranker,
        epoch=ckpt.epoch,
        threshold=checkpoint_threshold(ckpt),
    )
    log.info("loaded %s (sha1 %s)", detector.describe(), ckpt.sha1)
    return detector


def iter_detection(
    ct: CtVolume,
    detector: Detector,
    options: InferenceOptions | None = None,
    *,
    tuners: TunerCache | None = None,
) -> Generator[InferenceProgress, None, InferenceResult]:
    """:func:`iter_inference` with ``detector``'s model, then its ranker over the candidates,
    of which it keeps the ``options.candidates.max_candidates`` most probable."""
    options = detector.options_for(options)
    warning = detector.spacing_warning(ct)
    if warning:
        log.warning("%s", warning)
    result = yield from iter_inference(ct, detector.model, options, tuners=tuners)
    if detector.ranker is not None and result.candidates:
        yield InferenceProgress(
            ct.shape_irc[0], ct.shape_irc[0], f"{ct.series_uid}: ranking candidates"
        )
        result.candidates = detector.ranker.rank(result.candidates, ct)
    limit = options.candidates.max_candidates
    result.candidates, result.left_out = most_probable(result.candidates, limit)
    if result.left_out:
        log.info(
            "%s: %d less probable candidate(s) left out: the detector keeps the %d most "
            "probable (--max-candidates)",
            ct.series_uid,
            result.left_out,
            limit,
        )
    return result


def run_detection(
    ct: CtVolume,
    detector: Detector,
    options: InferenceOptions | None = None,
    *,
    tuners: TunerCache | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> InferenceResult:
    """:func:`iter_detection` driven to its end (``progress``/``should_stop`` as in
    :func:`~src_train.infer.runner.run_inference`)."""
    return run_steps(
        iter_detection(ct, detector, options, tuners=tuners),
        progress,
        should_stop,
        f"Detection on {ct.series_uid}",
        "slices",
    )
