"""Training throughput of the default model: baseline, chosen settings, loader, end to end.

One run prints, side by side, in training samples (64x64 crops, 7 context slices) per second:

    (a) baseline: a plain fp32 NCHW training step (forward, loss, backward, Adam) on a batch
        already in memory: no augmentation, no data loader;
    (b) the same step with the settings ``lunaseg train`` picks on this device (``--amp auto
        --channels-last auto``: bf16 autocast + channels_last on CPUs with native bf16 and
        AMX, else fp32 NCHW), and that step with the batch augmentation on the device added;
    (c) data loading alone: the training dataset and loader over a cache (memory-mapped crops,
        context slices, HU clamp, collation), with the trainer's worker count;
    (d) ``lunaseg train`` end to end: the Trainer (loading, augmentation and step together),
        read from its progress events (the last epoch's training rate; validation excluded).

The issue's goal is (d) >= (a). The data are synthetic scans written to a temporary folder.
(a) and (b) are the median of ``--repeats`` timings of ``--steps`` steps after warm-up steps.
Example (about 40 s on one core; figures of the 2-core dev CPU in docs/training_results.md)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --threads 1

On a CPU with AMX, ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` imitates one without it (see
``benchmarks/infer_precision.py``), and ``auto`` then picks fp32 NCHW for (b) and (d).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from src_train.augment import AugmentConfig, BatchAugment
from src_train.cache import SeriesCache
from src_train.datasets import TrainingDataset
from src_train.devices import resolve_device
from src_train.losses import build_loss
from src_train.model import ModelConfig, build_model, count_parameters
from src_train.records.split import split_series
from src_train.synth import write_dataset
from src_train.train import ProgressEvent, TrainConfig, Trainer, step_settings

WARMUP_STEPS = 3
DATA_SEED = 7


def step_rate(
    image: torch.Tensor,
    label: torch.Tensor,
    model_config: ModelConfig,
    device: torch.device,
    amp: torch.dtype | None,
    channels_last: bool,
    augment: BatchAugment | None,
    steps: int,
    repeats: int,
) -> float:
    """Median samples/s of ``steps`` training steps on the in-memory batch ``(image, label)``."""
    torch.manual_seed(0)
    model = build_model(model_config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        image = image.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters())
    loss_fn = build_loss("dice-fn")
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        x, y = image, label
        if augment is not None:
            with torch.no_grad():
                x, y = augment(x, y, generator=generator)
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rates.append(image.shape[0] * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(dataset: TrainingDataset, batch_size: int, workers: int, epoch: int) -> float:
    """Samples/s of one pass over ``dataset`` through a DataLoader as the trainer builds it."""
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    start = time.perf_counter()
    count = sum(image.shape[0] for image, _ in loader)
    return count / (time.perf_counter() - start)


def trainer_rate(config: TrainConfig) -> tuple[list[float], float]:
    """Run the Trainer; returns each epoch's training samples/s (from its last batch event)
    and the wall time of :meth:`Trainer.fit` in seconds."""
    per_epoch: dict[int, float] = {}

    def on_event(event: ProgressEvent) -> None:
        if event.kind == "batch" and event.batch == event.batches:
            per_epoch[event.epoch] = event.samples_per_s

    start = time.perf_counter()
    Trainer(config, callbacks=[on_event], command_line=["train_throughput.py"]).fit()
    return [per_epoch[e] for e in sorted(per_epoch)], time.perf_counter() - start


def _timed(what: str, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    fn()
    print(f"  {what}: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--model", default="unet", help="unet or segnet (default model: unet)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per repeat, (a)/(b)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure, (a)/(b)")
    parser.add_argument("--scans", type=int, default=5, help="synthetic scans (full size)")
    parser.add_argument("--epochs", type=int, default=2, help="Trainer epochs, (d)")
    parser.add_argument("--epoch-samples", type=int, default=1024, help="(c) and (d)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers, (c)/(d)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--data-dir", help="use this synthetic folder instead of a new one")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp, channels_last = step_settings("auto", "auto", device)
    train_cfg = TrainConfig(model=args.model)  # the trainer's defaults for everything else
    model_config = train_cfg.model_config()
    amp_name = str(amp).replace("torch.", "") if amp else "off (fp32)"
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
        f"{os.cpu_count()} CPUs seen"
    )
    print(
        f"model {model_config.arch} depth {model_config.depth} filters {model_config.filters} "
        f"({count_parameters(build_model(model_config)):,} parameters), loss dice-fn, Adam; "
        f"batch {args.batch_size} x {model_config.in_channels} x {train_cfg.crop_size} x "
        f"{train_cfg.crop_size}"
    )
    print(
        f"chosen settings (--amp auto --channels-last auto): amp {amp_name}, "
        f"channels_last {channels_last}; augmentation {train_cfg.augment}; "
        f"loader workers {args.workers}"
    )

    with tempfile.TemporaryDirectory(prefix="lunaseg-bench-") as tmp:
        data = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        cache_dir = Path(tmp) / "cache"
        print("preparing:")
        if not args.data_dir:
            _timed(
                f"{args.scans} synthetic scans (seed {DATA_SEED})",
                lambda: write_dataset(data, n_scans=args.scans, seed=DATA_SEED),
            )
        cache = SeriesCache(data, cache_dir)
        _timed("cache", cache.build_all)
        train_uids = split_series(cache.series_uids, train_cfg.val_stride).train
        dataset = TrainingDataset(
            cache, train_uids, args.epoch_samples, train_cfg.sample_config(), seed=0
        )
        image = torch.stack([dataset[i][0] for i in range(args.batch_size)]).to(device)
        label = torch.stack([dataset[i][1] for i in range(args.batch_size)]).to(device)
        augment = BatchAugment(AugmentConfig.from_names(train_cfg.augment)).to(device)

        def steps(amp_: torch.dtype | None, cl: bool, aug: BatchAugment | None) -> float:
            return step_rate(
                image, label, model_config, device, amp_, cl, aug, args.steps, args.repeats
            )

        rate_a = steps(None, False, None)
        rate_b = steps(amp, channels_last, None)
        rate_b_aug = steps(amp, channels_last, augment)
        loader_rate(dataset, args.batch_size, args.workers, epoch=1)  # opens the memory maps
        rate_c = loader_rate(dataset, args.batch_size, args.workers, epoch=2)
        trainer_cfg = TrainConfig(
            data_dir=str(data),
            cache_dir=str(cache_dir),
            run_dir=str(Path(tmp) / "run"),
            model=args.model,
            epochs=args.epochs,
            epoch_samples=args.epoch_samples,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=str(device),
            threads=args.threads,
            val_every=args.epochs + 1,  # validation on epoch 1 and the last (outside the rate)
            tensorboard=False,
            seed=0,
        )
        per_epoch, wall = trainer_rate(trainer_cfg)
        rate_d = per_epoch[-1]

    print(f"\nsamples/s ({args.model}, batch {args.batch_size}); x = ratio to (a)")
    rows = [
        ("(a) baseline: fp32 NCHW step, batch in memory, no augmentation", rate_a),
        (f"(b) chosen: {amp_name} + channels_last {channels_last}, batch in memory", rate_b),
        ("    (b) + batch augmentation on the device", rate_b_aug),
        (f"(c) data loading alone (dataset + DataLoader, {args.workers} workers)", rate_c),
        (f"(d) lunaseg train end to end (Trainer, epoch {len(per_epoch)})", rate_d),
    ]
    for name, rate in rows:
        print(f"{name:74s} {rate:8.1f}  {rate / rate_a:5.2f}x")
    print(
        f"(d) per epoch: {', '.join(f'{r:.1f}' for r in per_epoch)} samples/s "
        f"({args.epochs} x {args.epoch_samples} samples, fit() {wall:.1f} s with cache check "
        "and validation)"
    )
    verdict = "met" if rate_d >= rate_a else "NOT met"
    print(f"goal (d) >= (a): {verdict} ({rate_d:.1f} vs {rate_a:.1f} samples/s)")


if __name__ == "__main__":
    main()
