"""Models return logits of the input's size; checkpoints round-trip and refuse foreign files."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from src_train.errors import CheckpointError, ConfigError
from src_train.model import (
    ARCHITECTURES,
    ModelConfig,
    build_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("height_width", [(32, 32), (40, 24), (37, 50)])
def test_output_is_one_logit_channel_of_input_size(
    arch: str, depth: int, height_width: tuple[int, int]
) -> None:
    cfg = ModelConfig(arch=arch, depth=depth, filters=4)
    model = build_model(cfg).eval()
    x = torch.randn(2, cfg.in_channels, *height_width) * 500
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, *height_width)
    assert torch.isfinite(y).all()


def test_default_is_the_spec_unet() -> None:
    cfg = ModelConfig()
    assert (cfg.arch, cfg.in_channels, cfg.depth, cfg.filters) == ("unet", 7, 3, 16)
    model = build_model(cfg)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 16 and convs[0].padding == (1, 1)
    assert max(m.out_channels for m in convs) == 64  # 16 doubling over 3 levels
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    assert isinstance(model.input_norm, torch.nn.BatchNorm2d)


def test_filters_and_depth_are_parameters() -> None:
    small = sum(p.numel() for p in build_model(ModelConfig(filters=4, depth=2)).parameters())
    big = sum(p.numel() for p in build_model(ModelConfig(filters=8, depth=3)).parameters())
    assert big > small


def test_model_returns_logits_not_probabilities() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(filters=4)).train()
    y = model(torch.randn(4, 7, 32, 32) * 800)
    assert (y < 0).any() or (y > 1).any()


def test_input_batchnorm_makes_hu_scale_irrelevant_in_train_mode() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(filters=4)).train()
    x = torch.randn(4, 7, 16, 16)
    y1 = model(x)
    y2 = model(x * 1000 - 300)
    assert torch.allclose(y1, y2, atol=1e-3)


def test_segnet_unpools_at_the_encoder_max_positions() -> None:
    """The top decoder output is non-zero only where the first encoder level had its 2x2 max."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="segnet", filters=4, depth=3)).eval()
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    seen: dict[str, torch.Tensor] = {}
    model.encoder[0].register_forward_hook(lambda m, i, o: seen.update(encoded=o))
    model.top.register_forward_hook(lambda m, i, o: seen.update(unpooled=i[0]))
    with torch.no_grad():
        assert model(torch.randn(2, 7, 16, 16) * 300).shape == (2, 1, 16, 16)
    encoded, unpooled = seen["encoded"], seen["unpooled"]
    _, indices = torch.nn.functional.max_pool2d(encoded, 2, return_indices=True)
    at_max = torch.zeros_like(encoded).flatten(2).scatter_(2, indices.flatten(2), 1.0)
    assert (unpooled != 0).any()
    assert not (unpooled.flatten(2)[at_max == 0] != 0).any(), "values only at pooled maxima"


@pytest.mark.parametrize(
    "kwargs",
    [{"arch": "vnet"}, {"depth": 0}, {"filters": -1}, {"in_channels": 2.5}, {"in_channels": 0}],
)
def test_bad_model_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("arch", ["unet", "segnet"])
def test_any_channel_count_is_a_model_but_only_odd_ones_are_a_ct_context(arch: str) -> None:
    rgba = ModelConfig(arch=arch, in_channels=4, depth=2, filters=4)
    with torch.no_grad():
        assert build_model(rgba)(torch.rand(2, 4, 12, 12)).shape == (2, 1, 12, 12)
    with pytest.raises(ConfigError, match="4 input channels, not a CT context"):
        _ = rgba.context_slices
    assert ModelConfig(in_channels=3).context_slices == 1
    assert ModelConfig(in_channels=7).context_slices == 3


def test_wrong_channel_count_raises() -> None:
    with pytest.raises(ConfigError, match="expects input"):
        build_model(ModelConfig(filters=4))(torch.zeros(1, 3, 16, 16))


def _trained_pair(tmp_path: Path, arch: str = "unet") -> tuple[torch.nn.Module, Path, ModelConfig]:
    torch.manual_seed(1)
    cfg = ModelConfig(arch=arch, filters=4, depth=2)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters())
    loss = model(torch.randn(2, 7, 16, 16)).mean()
    loss.backward()
    opt.step()
    path = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(
        path,
        model,
        cfg,
        optimizer=opt,
        epoch=3,
        samples_seen=120,
        train_config={"lr": 1e-3},
        command_line=["lunaseg", "train"],
        metrics={"val_recall": 0.5},
    )
    return model, path, cfg


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path: Path, arch: str) -> None:
    model, path, cfg = _trained_pair(tmp_path, arch)
    loaded, loaded_cfg = load_model(path, device="cpu")
    assert loaded_cfg == cfg
    assert not loaded.training
    model.eval()
    x = torch.randn(3, 7, 24, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_fields_and_atomic_write(tmp_path: Path) -> None:
    _, path, cfg = _trained_pair(tmp_path)
    ckpt = load_checkpoint(path)
    assert ckpt.model_config == cfg
    assert ckpt.epoch == 3 and ckpt.samples_seen == 120
    assert ckpt.train_config == {"lr": 1e-3}
    assert ckpt.command_line == ["lunaseg", "train"]
    assert ckpt.metrics == {"val_recall": 0.5}
    assert ckpt.optimizer_state is not None and ckpt.optimizer_state["state"]
    assert len(ckpt.sha1) == 40 and ckpt.created.endswith("Z")
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp files left


def test_checkpoint_permissions_follow_the_umask(tmp_path: Path) -> None:
    """Not mkstemp's private 0600: a shared run folder's checkpoints are readable by the team."""
    old = os.umask(0o022)
    try:
        _, path, _ = _trained_pair(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_loading_maps_every_tensor_to_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file holding CUDA tensors loads on a CPU-only machine because every read maps storages
    to the CPU (checked here on any machine; the CUDA test below does it for real)."""
    _, path, _ = _trained_pair(tmp_path)
    maps: list[object] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        maps.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", spy)
    load_model(path, device="cpu")
    load_checkpoint(path)
    assert maps == ["cpu", "cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_written_checkpoint_loads_on_cpu(tmp_path: Path) -> None:
    """A model trained on the GPU, and even a file holding CUDA tensors, load on the CPU."""
    cfg = ModelConfig(filters=4, depth=2)
    model = build_model(cfg).cuda()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 7, 16, 16, device="cuda")).mean().backward()
    opt.step()
    path = tmp_path / "gpu.pt"
    save_checkpoint(path, model, cfg, optimizer=opt)
    raw = torch.load(path, map_location="cuda", weights_only=True)
    assert all(t.is_cuda for t in raw["model_state"].values())
    cuda_file = tmp_path / "cuda_tensors.pt"
    torch.save(raw, cuda_file)  # as if written without moving tensors to the CPU
    for src in (path, cuda_file):
        loaded, _ = load_model(src, device="cpu")
        assert all(p.device.type == "cpu" for p in loaded.state_dict().values())
        ckpt = load_checkpoint(src)
        assert all(t.device.type == "cpu" for t in ckpt.model_state.values())


def test_non_checkpoint_file_raises_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "notes.pt"
    bad.write_text("hello, I am not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.pt"):
        load_checkpoint(bad)


def test_foreign_torch_file_raises(tmp_path: Path) -> None:
    bad = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="not a LunaSeg checkpoint"):
        load_model(bad)


def test_truncated_checkpoint_raises(tmp_path: Path) -> None:
    _, path, _ = _trained_pair(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_model(cut)


def test_missing_checkpoint_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_of_other_shape_raises(tmp_path: Path) -> None:
    model = build_model(ModelConfig(filters=4, depth=2))
    path = tmp_path / "liar.pt"
    # weights of a 4-filter model declared as an 8-filter model
    save_checkpoint(path, model, ModelConfig(filters=8, depth=2))
    with pytest.raises(CheckpointError, match=r"liar\.pt"):
        load_model(path)


def test_expected_config_mismatch_raises(tmp_path: Path) -> None:
    _, path, _ = _trained_pair(tmp_path)
    with pytest.raises(CheckpointError, match="not the expected"):
        load_checkpoint(path, expected=ModelConfig(arch="segnet", filters=4, depth=2))


def test_wrapped_model_saves_plain_state(tmp_path: Path) -> None:
    cfg = ModelConfig(filters=4, depth=2)
    model = build_model(cfg)
    wrapped = torch.nn.DataParallel(model)
    path = tmp_path / "w.pt"
    save_checkpoint(path, wrapped, cfg)
    assert not any(k.startswith("module.") for k in load_checkpoint(path).model_state)


def _refusal(path: Path) -> str:
    """The message a user reads when ``lunaseg infer --checkpoint PATH`` refuses the file."""
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert str(path) in message
    # LunaSeg's words, whole sentences: never torch's unsafe advice, never a text cut short.
    assert "weights_only" not in message
    assert "PyTorch 2.6" not in message
    assert message.endswith(".")
    return message


def test_random_bytes_checkpoint_says_what_it_is_and_what_to_do(tmp_path: Path) -> None:
    noise = tmp_path / "download.pt"
    noise.write_bytes(bytes(range(256)) * 16)
    message = _refusal(noise)
    assert "not a LunaSeg checkpoint" in message
    assert "4,096 bytes" in message
    assert "written by 'lunaseg train'" in message


def test_empty_checkpoint_says_the_save_was_interrupted(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    message = _refusal(empty)
    assert "empty (0 bytes)" in message
    assert "Copy it again" in message


def test_cut_checkpoint_says_truncated_and_to_copy_it_again(tmp_path: Path) -> None:
    _, path, _ = _trained_pair(tmp_path)
    cut = tmp_path / "half.pt"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    message = _refusal(cut)
    assert "damaged or truncated" in message
    assert f"{len(data) // 2:,} bytes" in message
    assert "Copy it again" in message


def test_pickled_model_is_refused_naming_the_object_not_loaded(tmp_path: Path) -> None:
    whole = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), whole)
    message = _refusal(whole)
    assert "not a LunaSeg checkpoint" in message
    assert "torch.nn.modules.linear.Linear" in message
    assert "written by 'lunaseg train'" in message


def test_a_zip_that_is_no_torch_file_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "photos.pt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("photo.txt", "not tensors")
    message = _refusal(archive)
    assert "not a LunaSeg checkpoint, or is a damaged one" in message


def test_callers_advice_replaces_the_closing_suggestion(tmp_path: Path) -> None:
    noise = tmp_path / "noise.pt"
    noise.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"Pick the demo model instead\.$"):
        load_checkpoint(noise, advice="Pick the demo model instead.")
