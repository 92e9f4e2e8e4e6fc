"""The engine cache keeps the graphs of the newest weights only (no runtime needed)."""

from __future__ import annotations

import pytest
import torch
from models import random_model

from src_train.infer import backends
from src_train.infer.backends import ENGINE_CACHE_MODELS, EngineCache


def test_a_trainer_validating_new_weights_keeps_only_the_newest_graphs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exported: list[int] = []

    def fake_export(module, example):  # type: ignore[no-untyped-def]
        exported.append(1)
        return b"graph %d" % len(exported)

    monkeypatch.setattr(backends, "export_onnx", fake_export)
    cache = EngineCache()
    model = random_model()
    keys = []
    for step in range(ENGINE_CACHE_MODELS + 2):  # the weights change between validations
        with torch.no_grad():
            next(model.parameters()).add_(0.1)
        engines = cache.prepare(["openvino"], model, 16)
        assert engines.names == ["openvino"]
        keys.append(engines._key)
        cache._sessions[("openvino", engines._key, 1)] = f"session {step}"
    assert len(set(keys)) == len(keys) == len(exported)
    assert list(cache._graphs) == keys[-ENGINE_CACHE_MODELS:]
    assert {k[1] for k in cache._sessions} == set(keys[-ENGINE_CACHE_MODELS:])
    cache.prepare(["openvino"], model, 16)  # the same weights again: no new export
    assert len(exported) == len(keys)
