"""FROC and CPM of each way of ranking a segmenter's candidates, measured on held-out scans.

One segmentation checkpoint; its candidates are collected once on training series (the ones
its run trained on, to fit rankers) and once on an evaluation folder (to score them). Then every
option is fitted on the training candidates and scored on the evaluation candidates with the
official LUNA16 rules (``annotations.csv`` + ``annotations_excluded.csv`` when present):

* ``segmenter-mean`` / ``segmenter-max``: the mean / highest voxel probability (no 2nd stage);
* ``features``, ``classifier``, ``combined``: :mod:`src_train.classify` rankers.

The training side is labelled as ``lunaseg train`` labels it: by the reviewed nodules
(:func:`~src_train.train.run_data.run_truth`; the raw annotations where nothing is reviewed),
with the same point examples (:func:`~src_train.train.second_stage.iter_folder_points`). The
evaluation side is scored against the evaluation folders' annotation files.

Candidates are cached per series in ``--work`` (keyed by the checkpoint's SHA-1), so a rerun
only refits. ``--extra-points DIR`` adds, for the classifier only, the annotated nodule centers
and candidate points (``candidates.csv``) of DIR's series that are not in the training folder
(the first ``--extra-scans`` of them): more distinct nodules without running the segmenter on
them. Example::

    OMP_NUM_THREADS=1 python benchmarks/ranking_options.py --checkpoint RUN/checkpoint_best.pt \\
        --train-data /tmp/q/train7 --mine 8 --eval-data /tmp/q/tune555 --work /tmp/q/rank
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from src_train.classify import RANKERS, ClassifierConfig, Ranker, RankerExamples, fit_ranker
from src_train.classify.patches import extract_patches
from src_train.classify.training import candidate_examples, label_candidates
from src_train.evaluate import Candidate, evaluate_froc
from src_train.infer import CandidateConfig, InferenceOptions, TunerCache, run_inference
from src_train.infer.detector import load_detector
from src_train.luna import LunaFolder
from src_train.model import file_sha1
from src_train.progress import run_steps
from src_train.records.candidate import CandidateNodule
from src_train.records.truth import ScoringTruth, scoring_truth
from src_train.train.run_data import run_truth
from src_train.train.second_stage import iter_folder_points

OPTIONS = ("segmenter-mean", "segmenter-max", *RANKERS[1:])


def collect(
    folder: LunaFolder,
    uids: list[str],
    detector,  # type: ignore[no-untyped-def]
    work: Path,
    label: str,
    options: InferenceOptions,
) -> dict[str, tuple[list[CandidateNodule], np.ndarray]]:
    """Candidates and their patches per series (cached in ``work``)."""
    out = {}
    tuners = TunerCache()
    for k, uid in enumerate(uids):
        path = work / f"{label}-{uid}.pkl"
        if path.is_file():
            out[uid] = pickle.loads(path.read_bytes())
            continue
        started = time.perf_counter()
        ct = folder.load(uid)
        result = run_inference(ct, detector.model, options, tuners=tuners)
        patches = extract_patches(ct, [c.center_xyz_mm for c in result.candidates])
        out[uid] = (result.candidates, patches)
        path.write_bytes(pickle.dumps(out[uid]))
        print(
            f"  {label} {k + 1}/{len(uids)} {uid[-8:]}: {len(result.candidates)} candidates "
            f"in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return out


def collect_eval(
    folders: list[str],
    detector,  # type: ignore[no-untyped-def]
    work: Path,
    options: InferenceOptions,
) -> tuple[dict[str, tuple[list[CandidateNodule], np.ndarray]], ScoringTruth]:
    """Candidates and patches of every series of ``folders`` (pooled; a series UID may occur
    once) and the truth they are scored against (each folder's annotation files)."""
    scored: dict[str, tuple[list[CandidateNodule], np.ndarray]] = {}
    truth = ScoringTruth()
    for data in folders:
        folder = LunaFolder(data)
        uids = folder.series_uids
        repeated = sorted(set(uids) & set(scored))
        if repeated:
            raise SystemExit(f"{data}: series {repeated[0]} is in an earlier --eval-data folder")
        print(f"scoring on {data}: {len(uids)} series")
        label = "eval-" + hashlib.sha1(str(Path(data).resolve()).encode()).hexdigest()[:8]
        scored.update(collect(folder, uids, detector, work, label, options))
        truth.pool(scoring_truth(folder), uids)
    return scored, truth


def folder_points(folder: LunaFolder, uids: list[str]) -> RankerExamples:
    """The classifier's point examples of ``uids`` (reviewed nodule centres, candidate points),
    built as ``lunaseg train`` builds them (:func:`iter_folder_points`)."""
    return run_steps(iter_folder_points(folder, uids), None, None, "reading points")


def score(option: str, ranker: Ranker | None, cands: list[CandidateNodule], patches: np.ndarray):
    if option == "segmenter-mean":
        return [c.mean_probability for c in cands]
    if option == "segmenter-max":
        return [c.max_probability for c in cands]
    assert ranker is not None
    return ranker.scores(cands, patches=patches).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--train-data", required=True, help="the run's data folder")
    parser.add_argument("--mine", type=int, default=0, help="training series to mine (0: all)")
    parser.add_argument(
        "--eval-data",
        required=True,
        nargs="+",
        help="held-out folder(s) to score on; several are pooled as one set",
    )
    parser.add_argument("--work", required=True, help="folder for cached candidates")
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--classifier-epochs", type=int, default=ClassifierConfig.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.5, help="mask probability")
    parser.add_argument(
        "--extra-points",
        help="a folder whose series outside --train-data add their nodule centers and "
        "candidate points to the classifier's examples",
    )
    parser.add_argument(
        "--extra-scans", type=int, default=0, help="of --extra-points' series (0: all)"
    )
    parser.add_argument(
        "--min-diameter", type=float, default=CandidateConfig.min_diameter_mm, help="mm"
    )
    args = parser.parse_args()
    options = InferenceOptions(
        device="cpu",
        threshold=args.threshold,
        candidates=CandidateConfig(min_diameter_mm=args.min_diameter),
    )
    torch.manual_seed(args.seed)
    detector = load_detector(args.checkpoint)
    setting = "" if args.threshold == 0.5 else f"-t{args.threshold:g}"
    setting += (
        "" if args.min_diameter == CandidateConfig.min_diameter_mm else f"-d{args.min_diameter:g}"
    )
    work = Path(args.work) / (file_sha1(args.checkpoint)[:12] + setting)
    work.mkdir(parents=True, exist_ok=True)
    train_folder = LunaFolder(args.train_data)
    if detector.contract is not None:
        train_uids = list(detector.contract.train_series)
    else:  # a checkpoint without run information: every series of the folder it was trained on
        print(f"{args.checkpoint} carries no split: mining every series of {args.train_data}")
        train_uids = train_folder.series_uids
    if args.mine:
        train_uids = train_uids[: args.mine]
    print(f"checkpoint {args.checkpoint}: mining {len(train_uids)} training series")
    mined = collect(train_folder, train_uids, detector, work, "train", options)
    truth_train = run_truth(train_folder)  # reviewed, as training labels its candidates
    examples = RankerExamples()
    for uid, (cands, patches) in mined.items():
        excluded = [f for f in truth_train.excluded if f.series_uid == uid]
        part = candidate_examples(
            train_folder.load(uid), cands, truth_train.nodules.get(uid, []), excluded, False
        )
        keep = label_candidates(cands, truth_train.nodules.get(uid, []), excluded) >= 0
        part.patches = patches[keep]
        examples.extend(part)
    all_train = (
        list(detector.contract.train_series) if detector.contract else train_folder.series_uids
    )
    # every training series' nodule centers and candidate points
    examples.extend(folder_points(train_folder, all_train))
    if args.extra_points:
        extra = LunaFolder(args.extra_points)
        known = set(train_folder.series_uids)
        extra_uids = [u for u in extra.series_uids if u not in known]
        extra_uids = extra_uids[: args.extra_scans] if args.extra_scans else extra_uids
        examples.extend(folder_points(extra, extra_uids))
        print(f"extra points from {len(extra_uids)} series of {args.extra_points}")
    print(f"examples: {examples.summary()}")

    scored, truth = collect_eval(args.eval_data, detector, work, options)
    eval_uids = list(scored)
    config = dataclasses.replace(ClassifierConfig(), epochs=args.classifier_epochs, seed=args.seed)
    print(
        "| option | recall | candidates/scan | FP/scan @90% | FP/scan @95% | "
        "sens @1/8,1/4,1/2,1,2,4,8 FP/scan | CPM | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for option in args.options.split(","):
        started = time.perf_counter()
        ranker = None
        if option in RANKERS[1:]:
            ranker = fit_ranker(option, examples, config)
        fit_s = time.perf_counter() - started
        marks = []
        for uid, (cands, patches) in scored.items():
            for c, s in zip(cands, score(option, ranker, cands, patches), strict=True):
                marks.append(Candidate(uid, c.center_xyz_mm, float(s)))
        froc = evaluate_froc(
            truth.nodules_of(eval_uids), marks, excluded=truth.excluded, series_uids=eval_uids
        )
        sens = ", ".join(f"{v:.2f}" for v in froc.sensitivity_at_rates)
        print(
            f"| {option} | {froc.recall:.3f} ({froc.n_detected}/{froc.n_nodules}) | "
            f"{froc.candidates_per_scan:.1f} | {froc.fps_per_scan_at(0.9):.2f} | "
            f"{froc.fps_per_scan_at(0.95):.2f} | {sens} | {froc.cpm:.3f} | {fit_s:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
