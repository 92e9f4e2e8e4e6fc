"""Small models and chest phantoms for inference tests (random weights, known blobs)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src_train.commands.infer_folder import InferRunOptions
from src_train.context import context_stack
from src_train.ct import CtVolume, Geometry
from src_train.infer import InferenceOptions
from src_train.model import ModelConfig, build_model, save_checkpoint
from src_train.records.contract import CONTRACT_KEY, DataContract

FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


PERMUTED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def run_options(**fields: object) -> InferRunOptions:
    """Run options on the CPU with some fields set."""
    return InferRunOptions(inference=InferenceOptions(device="cpu"), **fields)  # type: ignore[arg-type]


def random_model(seed: int = 0) -> nn.Module:
    """A U-Net with random weights and input statistics that keep logits moderate."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig())
    with torch.no_grad():
        model.input_norm.running_mean.fill_(-500.0)
        model.input_norm.running_var.fill_(500.0**2)
    return model.eval()


def chest(shape: tuple[int, int, int], direction: tuple[float, ...] | None = None) -> CtVolume:
    """Air around an elliptic body with two dark lungs and a few dense blobs; HU int16."""
    rng = np.random.default_rng(1)
    z, y, x = shape
    yy, xx = np.ogrid[:y, :x]
    hu = np.full(shape, -1000, dtype=np.int16)
    body = ((yy - y / 2) / (0.3 * y)) ** 2 + ((xx - x / 2) / (0.3 * x)) ** 2 < 1
    lungs = ((yy - y / 2) / (0.2 * y)) ** 2 + ((np.abs(xx - x / 2) - 0.13 * x) / (0.1 * x)) ** 2 < 1
    hu[:, body] = 30
    hu[:, lungs] = -850
    hu += rng.integers(-15, 15, size=shape, dtype=np.int16)
    hu[z // 2, y // 2 - 2 : y // 2 + 2, x // 2 - 2 : x // 2 + 2] = 60
    geometry = Geometry(
        shape_irc=shape,
        origin_xyz_mm=(-100.0, 50.0, 20.0),
        spacing_xyz_mm=(0.8, 0.8, 2.0),
        direction=direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    return CtVolume(hu=hu, geometry=geometry, series_uid="chest")


def reference_prob(model: nn.Module, ct: CtVolume) -> np.ndarray:
    """Slice-by-slice fp32 probabilities on whole slices, the plain way."""
    with torch.no_grad():
        x = torch.from_numpy(context_stack(ct.hu, np.arange(ct.hu.shape[0])))
        return torch.sigmoid(model(x))[:, 0].numpy()


# ---------------------------------------------------------------------------------------------
# lunaseg infer / eval
# ---------------------------------------------------------------------------------------------
def checkpoint_file(tmp_path: Path, name: str = "random.pt") -> Path:
    path = tmp_path / name
    save_checkpoint(path, random_model(), ModelConfig())
    return path


def contract_checkpoint(path: Path, contract: DataContract, options: dict[str, object]) -> Path:
    """A random-weight checkpoint carrying a run's data ``contract`` and training ``options``."""
    save_checkpoint(
        path,
        random_model(),
        ModelConfig(),
        train_config=options,
        extra={CONTRACT_KEY: contract.to_dict()},
    )
    return path


def as_if_saved_on_a_gpu(src: Path, dest: Path) -> None:
    """Copy a checkpoint, relabelling its tensors' storage location as ``cuda:0``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(item, data)
