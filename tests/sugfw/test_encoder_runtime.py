"""The encoder and the factored IoU pass on OpenVINO / ONNX Runtime: same records as torch within
tolerance on the real LiteMedSAM weights, and torch whenever a runtime is missing, fails, or does
not apply."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sugfw.metrics import mask_iou
from sugfw.models import build_model, runtime
from sugfw.pipeline import ScorerSpec
from tests.conftest import require_la2018

RUNTIMES = [name for name in ("openvino", "onnxruntime") if runtime.installed(name)]
# The tolerances: records from a runtime must be interchangeable with torch's.
MIN_UNION_IOU, MAX_DELTA_U, MAX_DELTA_FEATURE = 0.99, 1e-3, 1e-3


@pytest.fixture
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUGFW_CACHE", str(tmp_path / "exports"))
    return tmp_path / "exports"


def la2018_slices(count: int) -> list[np.ndarray]:
    from sugfw.data import load_volume

    volume, _, _ = load_volume(require_la2018()[0])
    depth = volume.shape[-1]
    return [volume[..., int(depth * f)] for f in np.linspace(0.35, 0.65, count)]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_records_match_torch_on_litemedsam(name: str) -> None:
    slices = la2018_slices(3)
    reference = ScorerSpec(k=2, device="cpu", runtime="torch").build()
    candidate = ScorerSpec(k=2, device="cpu", runtime=name).build()
    assert candidate.model.runtime.startswith(name)
    assert candidate.identity()["runtime"] == candidate.model.runtime
    kept = 0
    for image in slices:
        want, want_unions = reference.score_detailed(image)
        got, got_unions = candidate.score_detailed(image)
        for a, b in zip(want_unions, got_unions):
            assert a.any() == b.any()
            if a.any():
                assert mask_iou(a, b) >= MIN_UNION_IOU
        assert abs(want.uncertainty - got.uncertainty) <= MAX_DELTA_U
        assert np.abs(want.features_pgdr - got.features_pgdr).max() <= MAX_DELTA_FEATURE
        assert np.abs(want.features_mean - got.features_mean).max() <= MAX_DELTA_FEATURE
        kept += got.masks_kept
    assert kept > 0, "the slices should give everything mode some masks to compare"


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_embedding_matches_torch_and_the_export_is_reused(
    name: str, export_cache, monkeypatch
) -> None:
    model = build_model("litemedsam", device="cpu")
    canvas = torch.rand(2, 3, model.canvas_size, model.canvas_size)
    want = model.encode(canvas)
    boxes = torch.tensor([[10.0, 10.0, 120.0, 140.0], [60.0, 40.0, 200.0, 250.0]] * 20)  # 40
    want_logits, want_iou = model.decode(want[:1], boxes, False)
    assert model.use_runtime(name) == name
    got = model.encode(canvas)
    assert np.abs((got - want).numpy()).max() < 1e-4
    # The IoU filter through the runtime's pass (image products, then chunks) keeps the prompts.
    # Halfway between the two boxes' IoU: a threshold on a value itself would leave the filter
    # to rounding (the runtime's embedding differs from torch's by up to 1e-4).
    threshold = float(want_iou.min() + want_iou.max()) / 2
    passing = (want_iou > threshold).any(1)
    logits, iou = model.decode(got[:1], boxes, False, iou_thresh=threshold)
    assert len(iou) == int(passing.sum()) > 0
    assert torch.allclose(iou, want_iou[passing], atol=1e-4)
    exported = sorted(p.name.split("-")[0] for p in export_cache.glob("*.onnx"))
    assert exported == ["encoder", "iou16", "iou8", "iou_image"]

    def no_export(*args, **kwargs):
        raise AssertionError("the cached export should be reused")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = build_model("litemedsam", device="cpu")
    assert again.use_runtime(name) == name


def test_a_missing_runtime_falls_back_to_torch_with_a_log_line(monkeypatch, caplog) -> None:
    monkeypatch.setattr(runtime, "installed", lambda name: False)
    with caplog.at_level(logging.WARNING, logger="sugfw.models.runtime"):
        assert runtime.choose_runtime("openvino", torch.device("cpu")) == "torch"
        assert runtime.choose_runtime("auto", torch.device("cpu")) == "torch"
    assert sum("not installed" in r.getMessage() for r in caplog.records) == 2


def test_chunks_pad_the_last_rows_and_drop_their_outputs() -> None:
    calls = []

    def runner_of(size):
        def run(first, rows, scale):
            calls.append((size, rows[:, 0].tolist()))
            return (first + rows * scale, rows)  # a runner returns every output of its graph

        return run

    run = runtime.in_chunks({4: runner_of(4), 2: runner_of(2)})
    rows = torch.arange(7.0)[:, None]
    out = run(torch.tensor(100.0), rows, torch.tensor(2.0))
    # 7 rows: one chunk of 4, one of 2, then 1 row padded to 2 with a copy of itself.
    assert calls == [(4, [0.0, 1.0, 2.0, 3.0]), (2, [4.0, 5.0]), (2, [6.0, 6.0])]
    assert out[:, 0].tolist() == [100.0 + 2 * i for i in range(7)]


def test_torch_is_kept_on_a_gpu_under_bf16_and_when_asked() -> None:
    cpu = torch.device("cpu")
    assert runtime.choose_runtime("openvino", torch.device("cuda")) == "torch"
    assert runtime.choose_runtime("openvino", cpu, precision="bf16") == "torch"
    assert runtime.choose_runtime("torch", cpu) == "torch"
    with pytest.raises(ValueError, match="runtime='tensorrt'"):
        runtime.choose_runtime("tensorrt", cpu)


def test_auto_keeps_random_weights_in_torch_and_the_cache_key_unchanged(export_cache) -> None:
    model = build_model("litemedsam", device="cpu", random_weights=True)
    assert model.use_runtime("auto") == "torch"
    assert model.runtime == "torch" and not export_cache.exists()
    scorer = ScorerSpec(k=1, device="cpu", runtime="torch", random_weights=True).build()
    assert "runtime" not in scorer.identity()  # torch's cached records stay valid


@pytest.mark.skipif(not RUNTIMES, reason="no CPU runtime installed")
def test_a_failing_runtime_leaves_torch_working(monkeypatch, caplog) -> None:
    name = RUNTIMES[0]

    def broken(*args, **kwargs):
        raise RuntimeError("cannot load")

    monkeypatch.setattr(runtime, "export_graph", broken)
    model = build_model("litemedsam", device="cpu", random_weights=True)
    canvas = torch.rand(1, 3, model.canvas_size, model.canvas_size)
    with caplog.at_level(logging.WARNING, logger="sugfw.models.runtime"):
        assert model.use_runtime(name) == "torch"
    assert any("cannot load" in r.getMessage() for r in caplog.records)
    assert model.encode(canvas).shape == (1, 256, 64, 64)


class _Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(2, 2)


def test_an_export_key_follows_the_code_that_builds_the_graph() -> None:
    example = (torch.zeros(1, 2),)
    plain = runtime.Graph("g", torch.nn.Linear(2, 2), example, dynamo=False)
    again = runtime.Graph("g", torch.nn.Linear(2, 2), example, dynamo=False)
    wrapped = runtime.Graph("g", _Scaled(), example, dynamo=False)
    assert plain.code_digest() == again.code_digest()
    assert plain.code_digest() != wrapped.code_digest()  # this file's source joins the digest
