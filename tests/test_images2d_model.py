"""U-Net upsampling option: bilinear vs transposed convolution; old checkpoints stay loadable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from src_train.errors import ConfigError
from src_train.images2d.predict import iter_probabilities, predict_logits
from src_train.model import (
    ModelConfig,
    build_model,
    count_parameters,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("height_width", [(32, 32), (37, 50)])
def test_bilinear_unet_returns_logits_of_input_size(height_width: tuple[int, int]) -> None:
    cfg = ModelConfig(in_channels=3, depth=3, filters=4, up="bilinear")
    model = build_model(cfg).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, *height_width))
    assert y.shape == (2, 1, *height_width)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.Upsample) for m in model.modules()) == 2  # depth - 1


def test_bilinear_has_fewer_parameters_than_transpose() -> None:
    """A 2x2 transposed conv has 4 weights per channel pair, the 1x1 conv after bilinear one."""
    transpose = count_parameters(build_model(ModelConfig(in_channels=3, filters=8, depth=3)))
    bilinear = count_parameters(
        build_model(ModelConfig(in_channels=3, filters=8, depth=3, up="bilinear"))
    )
    # levels 8, 16, 32: up-layers 32->16 and 16->8; weights differ by 3 per channel pair
    assert transpose - bilinear == 3 * (32 * 16 + 16 * 8)


@pytest.mark.parametrize(
    "kwargs", [{"up": "nearest"}, {"arch": "segnet", "up": "bilinear"}], ids=["unknown", "segnet"]
)
def test_bad_upsampling_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="psampl"):
        ModelConfig(**kwargs)


def test_checkpoint_round_trips_the_upsampling(tmp_path: Path) -> None:
    cfg = ModelConfig(in_channels=3, filters=4, depth=2, up="bilinear")
    model = build_model(cfg)
    save_checkpoint(tmp_path / "b.pt", model, cfg)
    loaded, loaded_cfg = load_model(tmp_path / "b.pt")
    assert loaded_cfg.up == "bilinear"
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_checkpoint_without_the_up_key_loads_as_transpose(tmp_path: Path) -> None:
    """Checkpoints written before the option existed have no 'up' in their model_config."""
    cfg = ModelConfig(filters=4, depth=2)
    save_checkpoint(tmp_path / "new.pt", build_model(cfg), cfg)
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    del payload["model_config"]["up"]
    torch.save(payload, tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt.model_config.up == "transpose" and ckpt.model_config == cfg


def test_probabilities_come_batch_by_batch_at_the_model_size() -> None:
    """Without a model size: the sigmoid of the logits; with one, the images meet the model at
    that size and the probabilities come back at theirs."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(in_channels=3, depth=2, filters=4)).eval()
    images = torch.randint(0, 256, (5, 20, 30, 3), dtype=torch.uint8).numpy()
    *done, prob = _drain(iter_probabilities(model, images, batch_size=2))
    assert done == [2, 4, 5]
    logits = predict_logits(model, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert prob.dtype == np.float32 and prob.shape == (5, 20, 30)
    np.testing.assert_allclose(prob, torch.sigmoid(logits)[:, 0].numpy(), atol=1e-6)
    with torch.no_grad():  # a model that answers 0.5 everywhere, whatever the size
        model.head.weight.zero_()
        model.head.bias.zero_()
    *_, resized = _drain(iter_probabilities(model, images, model_size=16))
    assert resized.shape == (5, 20, 30) and np.allclose(resized, 0.5)


def _drain(steps):  # type: ignore[no-untyped-def]
    """Every yielded value of a generator, then its return value."""
    out = []
    while True:
        try:
            out.append(next(steps))
        except StopIteration as end:
            return [*out, end.value]
