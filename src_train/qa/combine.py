"""From signals to one suspicion in [0, 1] and the reasons behind it: a hand-set rule.

Each reason turns one signal into a score in [0, 1] with a linear ramp between two named
limits (:class:`QaRule`); the suspicion is their noisy-or, ``1 - prod(1 - score)``, so one
strong reason is enough and several weak ones add up. A reason is named in the output when its
score reaches :attr:`QaRule.named_from`. ``docs/qa.md`` compares this rule with a logistic
model fitted on synthetic label errors (``benchmarks/bench_qa.py``) and says why the rule is
the default.

Reasons (short words, joined by ``;`` in ``suspicious.csv``):

========== ==========================================================================
outside    the center lies outside its scan
body       the center lies outside the body (air beside the patient)
air        nothing dense at the center nor in the annotated sphere (plain lung or air)
thin       little of the annotated sphere is dense (a vessel, or a diameter too large)
small      the grown mask is far larger than the annotated diameter, or the tissue goes on
           past the annotated radius (a diameter too small, or a center on the chest wall)
large      the grown mask is far smaller than the annotated diameter
vessel     tissue leaves the annotated sphere on opposite sides: a tube passing through
capped     growth ran into the QA box (a leak into the chest wall or the mediastinum)
leak       growth went much further along one axis than along another
bone       the center is as bright as bone, and that bright structure is bone-sized (far longer
           than the annotated diameter, or leaving the box): a rib, a vertebra, the
           chest-wall cortex; a compact calcified nodule in lung is not suspicious
duplicate  another annotation lies within one radius and fits the image better
model      a checkpoint gives the spot a low probability and no candidate sits there
========== ==========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from src_train.qa.signals import NoduleSignals

#: Every reason, in the order they are listed and summarised.
REASONS = (
    "outside",
    "body",
    "air",
    "thin",
    "small",
    "large",
    "vessel",
    "capped",
    "leak",
    "bone",
    "duplicate",
    "model",
)


def ramp(value: float, start: float, full: float) -> float:
    """0 at ``start``, 1 at ``full``, linear between (either direction); NaN gives 0."""
    if math.isnan(value):
        return 0.0
    t = (value - start) / (full - start)
    return float(min(1.0, max(0.0, t)))


@dataclass(frozen=True)
class ModelSignals:
    """What a checkpoint says at an annotation.

    Attributes:
        probability: the highest voxel probability inside the annotated sphere.
        candidate_distance_mm: center to the nearest candidate's center (inf: none).
    """

    probability: float
    candidate_distance_mm: float


@dataclass(frozen=True)
class QaRule:
    """The limits of the hand-set rule (each ``(start, full)`` pair is a ramp: score 0 at
    ``start``, 1 at ``full``; HU, mm ratios and fractions as named)."""

    #: Body: score when the center is outside the body.
    body: float = 0.95
    #: Air: fill of the annotated sphere from which it starts / is full, and the HU at the
    #: center at or below which it counts (above: tissue, the reason is ``thin``).
    air_center_hu: float = -500.0
    air_fill: tuple[float, float] = (0.25, 0.03)
    #: Thin: fill of the annotated sphere (the center dense or not).
    thin_fill: tuple[float, float] = (0.85, 0.45)
    #: Small: dense fraction of the shell from one to two radii.
    small_shell: tuple[float, float] = (0.4, 0.6)
    #: Small: log2 of mask diameter over annotated diameter (positive: mask larger).
    small_log2: tuple[float, float] = (1.2, 1.7)
    #: Large: log2 of mask diameter over annotated diameter (negative: mask smaller).
    large_log2: tuple[float, float] = (-0.6, -1.2)
    #: Vessel: tissue in the shell (dense fraction), on both sides (balance), and a sphere
    #: not quite full (fill): a tube passing through the center.
    vessel_shell: tuple[float, float] = (0.12, 0.22)
    vessel_balance: tuple[float, float] = (0.35, 0.2)
    vessel_fill: tuple[float, float] = (0.98, 0.85)
    #: Capped: score per axis on which growth ran into the box.
    capped_per_axis: float = 0.3
    #: Leak: longest over shortest growth radius.
    leak_ratio: tuple[float, float] = (3.0, 6.0)
    leak_weight: float = 0.5
    #: Bone: HU at the center (rib marrow is about 300 HU, a vertebra's 220 HU) ...
    bone_hu: tuple[float, float] = (150.0, 250.0)
    #: ... times how far the bright structure at the center reaches, over the annotated
    #: diameter (a calcified nodule: 1.0-1.2; a rib or a spine: 3+), or 1 when it leaves
    #: the box.
    bone_extent_ratio: tuple[float, float] = (1.6, 2.4)
    #: Duplicate: score of the worse of two annotations within one radius.
    duplicate: float = 0.9
    #: Model: highest probability in the sphere, and how much having no candidate adds.
    model_probability: tuple[float, float] = (0.3, 0.02)
    model_weight: float = 0.7
    #: A reason is named when its score reaches this.
    named_from: float = 0.5

    def bone_sized(self, signals: NoduleSignals, radius_mm: float) -> float:
        """How bone-like the bright structure at the center is, in [0, 1]: 1 when it leaves
        the QA box, else a ramp on its extent over the annotated diameter (0 without one)."""
        if signals.bright_capped:
            return 1.0
        ratio = signals.bright_extent_mm / (2 * radius_mm) if radius_mm > 0 else math.nan
        return ramp(ratio, *self.bone_extent_ratio)

    def scores(
        self,
        signals: NoduleSignals,
        duplicate: bool = False,
        model: ModelSignals | None = None,
        radius_mm: float = math.nan,
    ) -> dict[str, float]:
        """Each reason's score in [0, 1] for one annotation."""
        if signals.outside:
            return {"outside": 1.0}
        log_ratio = math.log2(signals.diameter_ratio) if signals.diameter_ratio > 0 else -9.0
        score = {
            "body": self.body if signals.outside_body else 0.0,
            "air": ramp(signals.fill, *self.air_fill) * (signals.center_hu <= self.air_center_hu),
            "thin": ramp(signals.fill, *self.thin_fill),
            "small": max(
                ramp(signals.shell_fill, *self.small_shell), ramp(log_ratio, *self.small_log2)
            ),
            "large": ramp(log_ratio, *self.large_log2),
            "capped": min(1.0, self.capped_per_axis * signals.capped_axes),
            "vessel": ramp(signals.shell_fill, *self.vessel_shell)
            * ramp(signals.shell_balance, *self.vessel_balance)
            * ramp(signals.fill, *self.vessel_fill),
            "leak": self.leak_weight * ramp(signals.elongation, *self.leak_ratio),
            "bone": ramp(signals.center_hu, *self.bone_hu) * self.bone_sized(signals, radius_mm),
            "duplicate": self.duplicate if duplicate else 0.0,
        }
        if score["air"] >= score["thin"]:
            score["thin"] = 0.0  # one cause, named once
        if model is not None:
            near = model.candidate_distance_mm <= max(radius_mm, 0.0)
            low = ramp(model.probability, *self.model_probability)
            score["model"] = self.model_weight * low * (0.6 if near else 1.0)
        return score


def noisy_or(scores: dict[str, float]) -> float:
    """``1 - prod(1 - s)`` over the scores: the suspicion in [0, 1]."""
    values = np.clip(np.fromiter(scores.values(), dtype=np.float64), 0.0, 1.0)
    return float(1.0 - np.prod(1.0 - values)) if values.size else 0.0


@dataclass(frozen=True)
class Verdict:
    """One annotation's suspicion and the reasons named for it (strongest first).

    Attributes:
        suspicion: in [0, 1], higher = more likely a bad label.
        reasons: reason words from :data:`REASONS`.
        scores: every reason's score (for the benchmark and tables).
    """

    suspicion: float
    reasons: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)


def judge(scores: dict[str, float], named_from: float) -> Verdict:
    """The suspicion of ``scores`` and the reasons scoring at least ``named_from``."""
    named = sorted((s for s in scores if scores[s] >= named_from), key=lambda s: -scores[s])
    return Verdict(noisy_or(scores), tuple(named), dict(scores))
