"""Training throughput of one optimisation step (augment + forward + loss + backward + Adam).

Prints samples/s for fp32 / bf16 autocast, NCHW / channels_last, on the chosen device, for
random 64x64 crops (data loading excluded). Example::

    .venv/bin/python benchmarks/bench_train.py --device cpu --batch-size 16 --steps 6 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from src_train.augment import AugmentConfig, BatchAugment
from src_train.losses import build_loss
from src_train.model import ModelConfig, build_model, resolve_device


def measure(
    device: torch.device,
    amp: torch.dtype | None,
    channels_last: bool,
    batch: int,
    steps: int,
    crop: int,
    arch: str,
) -> float:
    """Samples per second over ``steps`` steps after two warm-up steps."""
    torch.manual_seed(0)
    config = ModelConfig(arch=arch)
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(model.parameters())
    loss_fn = build_loss("dice-fn")
    augment = BatchAugment(AugmentConfig.from_names("all"))
    image = torch.randn(batch, config.in_channels, crop, crop, device=device) * 300
    label = torch.zeros(batch, 1, crop, crop, dtype=torch.bool, device=device)
    label[:, :, crop // 3 : crop // 2, crop // 3 : crop // 2] = True
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.no_grad():
            x, y = augment(image, label)
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.arch}, batch {args.batch_size}, {args.crop}x{args.crop}"
    )
    for amp in (None, torch.bfloat16):
        for channels_last in (False, True):
            rate = measure(
                device, amp, channels_last, args.batch_size, args.steps, args.crop, args.arch
            )
            name = "bf16" if amp else "fp32"
            layout = "channels_last" if channels_last else "NCHW"
            print(f"{name:5s} {layout:14s} {rate:8.1f} samples/s")


if __name__ == "__main__":
    main()
