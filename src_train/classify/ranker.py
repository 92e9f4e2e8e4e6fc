"""Rank a series' candidates by how much they look like nodules: the detector's second stage.

A :class:`Ranker` replaces each candidate's ``probability`` (the segmenter's mean voxel
probability, kept as ``segmenter_probability``) with a nodule probability from one of
:data:`RANKERS`:

* ``features``: a logistic model over size, shape and the segmenter's confidence
  (:mod:`.features`);
* ``classifier``: the small 3-D CNN on a CT patch around the candidate (:mod:`.network`);
* ``combined``: a logistic model over the features and the classifier's logit.

A ranker travels inside the checkpoint (``extra["ranker"]``, :meth:`Ranker.state`), so
``lunaseg infer``, ``eval``, the viewer and validation rank alike. Patches are sampled on world
axes, features in millimetres: ranking does not depend on how a file orders its axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from src_train.classify.features import FEATURE_NAMES, LogisticModel, candidate_features
from src_train.classify.network import ClassifierConfig, NoduleClassifier, classifier_logits
from src_train.classify.patches import extract_patches
from src_train.ct import CtVolume
from src_train.errors import CheckpointError
from src_train.records.candidate import CandidateNodule

#: How candidates can be ranked (``segmenter`` = as grouped, no second stage).
RANKERS = ("segmenter", "features", "classifier", "combined")

#: Key of the ranker in a checkpoint's ``extra``.
RANKER_KEY = "ranker"


@dataclass
class Ranker:
    """A second stage (see the module docstring).

    Attributes:
        kind: one of :data:`RANKERS` except ``segmenter``.
        logistic: the logistic model (``features``: over :data:`FEATURE_NAMES`; ``combined``:
            over those and the classifier's logit, in that order); None for ``classifier``.
        classifier: the patch classifier (``classifier``, ``combined``); None otherwise.
    """

    kind: str
    logistic: LogisticModel | None = None
    classifier: NoduleClassifier | None = None

    @property
    def needs_patches(self) -> bool:
        """Whether scoring reads CT patches (the classifier does)."""
        return self.classifier is not None

    def scores(
        self,
        candidates: Sequence[CandidateNodule],
        ct: CtVolume | None = None,
        patches: np.ndarray | None = None,
    ) -> np.ndarray:
        """Nodule probabilities ``(N,)``; patches come from ``patches`` or are read from ``ct``."""
        if not candidates:
            return np.zeros(0)
        logit = None
        if self.classifier is not None:
            if patches is None:
                if ct is None:
                    raise ValueError("the classifier needs the CT or the patches")
                patches = extract_patches(ct, [c.center_xyz_mm for c in candidates])
            logit = classifier_logits(self.classifier, patches).astype(np.float64)
        if self.logistic is None:
            assert logit is not None
            return 1.0 / (1.0 + np.exp(-logit))
        features = candidate_features(candidates)
        if logit is not None:
            features = np.column_stack([features, logit])
        return self.logistic.probabilities(features)

    def rank(
        self,
        candidates: Sequence[CandidateNodule],
        ct: CtVolume | None = None,
        patches: np.ndarray | None = None,
    ) -> list[CandidateNodule]:
        """The candidates with the ranker's probability, most probable first (ties: larger)."""
        scores = self.scores(candidates, ct, patches)
        ranked = [
            dataclasses.replace(
                c,
                probability=float(s),
                segmenter_probability=(
                    c.segmenter_probability
                    if math.isfinite(c.segmenter_probability)
                    else c.probability
                ),
            )
            for c, s in zip(candidates, scores, strict=True)
        ]
        ranked.sort(key=lambda c: (-c.probability, -c.voxel_count))
        return ranked

    def describe(self) -> str:
        """One line for logs and the viewer."""
        what = {
            "features": "a logistic model over size, shape and segmenter confidence",
            "classifier": "a 3-D CNN on CT patches",
            "combined": "a logistic model over size, shape, segmenter confidence and a 3-D CNN",
        }
        return f"ranked by {what.get(self.kind, self.kind)}"

    # -- storage -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint stores (plain values and tensors)."""
        out: dict[str, Any] = {"kind": self.kind, "features": list(FEATURE_NAMES)}
        if self.logistic is not None:
            out["logistic"] = self.logistic.to_dict()
        if self.classifier is not None:
            out["classifier"] = {
                "config": self.classifier.config.to_dict(),
                "state": {k: v.detach().cpu() for k, v in self.classifier.state_dict().items()},
            }
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str = "the checkpoint") -> Ranker:
        """Inverse of :meth:`state`; :class:`CheckpointError` naming ``source`` when damaged."""
        try:
            kind = str(state["kind"])
            if kind not in RANKERS[1:]:
                raise ValueError(f"unknown ranker {kind!r}")
            if list(state.get("features", FEATURE_NAMES)) != list(FEATURE_NAMES):
                raise ValueError("its features differ from this LunaSeg's")
            logistic = LogisticModel.from_dict(state["logistic"]) if "logistic" in state else None
            classifier = None
            if "classifier" in state:
                config = ClassifierConfig(**state["classifier"]["config"])
                classifier = NoduleClassifier(config)
                classifier.load_state_dict(
                    {k: torch.as_tensor(v) for k, v in state["classifier"]["state"].items()}
                )
                classifier.eval()
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{source}: its candidate ranker cannot be read ({exc}). Retrain it or use a "
                "checkpoint without one."
            ) from exc
        return cls(kind, logistic, classifier)
