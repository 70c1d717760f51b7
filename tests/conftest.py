"""Shared fixtures: a tiny SAM-architecture model, a textured test slice, the LA2018 volumes; and
the rule that a test using the real Label Studio (``label_studio``, tests/live/conftest.py) is
slow.

Tests of the library are in tests/sugfw, of the backend without a real Label Studio, browser or
container in tests/backend, and with them in tests/live; what test files import by name (fakes,
builders) is in tests/fakes.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

# The fakes' own asserts (a project refusing a version no prediction carries) report like a test's.
pytest.register_assert_rewrite("tests.fakes")

TINY_SAM_SEED = 0
REPO = Path(__file__).resolve().parents[1]
LA2018_ENV = "SUGFW_LA2018"
LA2018_DEFAULT = REPO.parent / "shared" / "data" / "la2018"


@pytest.fixture(autouse=True)
def process_defaults_restored() -> Iterator[None]:
    """``create_app`` sets process-wide defaults (image policy, score-cache cap, checkpoint
    retention) for every later fetcher, cache and history of the process; each test ends by
    putting back what it found, so no test depends on which app an earlier one created."""
    import backend.jobs.training_history as training_history
    import backend.labelstudio.image_policy as image_policy
    import sugfw.cache as cache

    saved = (
        image_policy._default_policy,
        cache._default_max_entries,
        training_history._keep_last_runs,
    )
    yield
    image_policy.set_default_policy(saved[0])
    cache.set_default_max_entries(saved[1])
    training_history.set_default_keep_last_runs(saved[2])


def la2018_root() -> Path:
    """The LA2018 data folder: ``$SUGFW_LA2018``, else ``../shared/data/la2018`` beside the
    checkout."""
    return Path(os.environ.get(LA2018_ENV) or LA2018_DEFAULT)


def require_la2018(subfolder: str = "imagesTr", pattern: str = "*.nii.gz") -> list[Path]:
    """The LA2018 files under ``subfolder``; a skip without them, a failure when ``$CI`` is set
    (CI keeps the data beside the checkout, so a missing folder there is a broken setup)."""
    folder = la2018_root() / subfolder
    files = sorted(folder.glob(pattern))
    if not files:
        message = f"LA2018 not found: no {pattern} under {folder} (set {LA2018_ENV} to its folder)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so the data must be there")
        pytest.skip(message)
    return files


@pytest.fixture
def la2018_volumes() -> list[Path]:
    """LA2018 image volumes (imagesTr/*.nii.gz), sorted; see :func:`require_la2018`."""
    return require_la2018()


def _tiny_sam_net() -> torch.nn.Module:
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    # 256-pixel canvas, 16-pixel patches: a 16 × 16 grid of 32-channel patch features.
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=256,
            patch_size=16,
            embed_dim=48,
            depth=2,
            num_heads=2,
            mlp_ratio=4.0,
            out_chans=32,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=[1],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32,
            image_embedding_size=(16, 16),
            input_image_size=(256, 256),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=32,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
            num_multimask_outputs=3,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    )


@pytest.fixture
def tiny_sam():
    """A seeded, randomly initialised SAM (same code path as ViT-B) small enough for CPU tests."""
    from sugfw.models.sam import SamModel

    # fork_rng: seeding must not disturb the global generator other tests may rely on.
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SAM_SEED)
        net = _tiny_sam_net()
    model = SamModel(net, torch.device("cpu"), "tiny_sam", "tiny")
    model.canvas_size = 256
    model.grid_size = 16
    return model


@pytest.fixture
def textured_slice() -> Callable[..., np.ndarray]:
    """Factory for a smooth pattern plus noise: structure for the model, and a distinct slice per
    seed."""

    def make(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        rows, cols = np.mgrid[:height, :width]
        phase = rng.uniform(0, 2 * np.pi, size=2)
        pattern = np.sin(rows / 5.0 + phase[0]) + np.cos(cols / 7.0 + phase[1])
        return (pattern + 0.3 * rng.standard_normal((height, width))).astype(np.float32)

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions on a shared 2-core machine run ~30× slower with 2 threads
    (spin-waiting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- the slow tier: tests that use a real Label Studio server --------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the real Label Studio (directly or through a fixture) is slow: starting
    the server alone takes a minute, so ``-m "not slow"`` leaves it out."""
    for item in items:
        if "label_studio" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
