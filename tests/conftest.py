"""Shared fixtures: a tiny SAM-architecture model, a textured test slice, a real Label Studio server."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_SAM_SEED = 0


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
            embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=8
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
    """Factory for a smooth pattern plus noise: structure for the model, and a distinct slice per seed."""

    def make(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        rows, cols = np.mgrid[:height, :width]
        phase = rng.uniform(0, 2 * np.pi, size=2)
        pattern = np.sin(rows / 5.0 + phase[0]) + np.cos(cols / 7.0 + phase[1])
        return (pattern + 0.3 * rng.standard_normal((height, width))).astype(np.float32)

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions on a shared 2-core machine run ~30× slower with 2 threads (spin-waiting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- a real Label Studio server, for integration tests ---------------------------------------------

LABEL_STUDIO_VERSION = "1.23.2"
LABEL_STUDIO_VENV = Path(__file__).resolve().parents[1] / ".venv-ls"
LABEL_STUDIO_START_S = 180.0


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str
    """Legacy API token of the admin user (sent as ``Authorization: Token <token>``)."""
    files_root: Path
    """LOCAL_FILES_DOCUMENT_ROOT of the server."""
    log_path: Path


def _label_studio_executable() -> Path:
    """``label-studio`` from its own venv, installed on first use; no network → the test skips."""
    executable = LABEL_STUDIO_VENV / "bin" / "label-studio"
    if executable.exists():
        return executable
    # The server pins its own numpy, Pillow and SDK: it never shares the backend's environment.
    subprocess.run([sys.executable, "-m", "venv", str(LABEL_STUDIO_VENV)], check=True)
    install = subprocess.run(
        [str(LABEL_STUDIO_VENV / "bin" / "pip"), "install", "--quiet", f"label-studio=={LABEL_STUDIO_VERSION}"],
        capture_output=True, text=True, timeout=900,
    )
    if install.returncode != 0 or not executable.exists():
        shutil.rmtree(LABEL_STUDIO_VENV, ignore_errors=True)  # a half-installed venv would pass the check above
        tail = (install.stderr or install.stdout).strip().splitlines()[-3:]
        pytest.skip(f"cannot install label-studio=={LABEL_STUDIO_VERSION} into {LABEL_STUDIO_VENV} "
                    f"(no network?): {' | '.join(tail)}")
    return executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudioServer]:
    """A fresh Label Studio (SQLite, own data dir) on 127.0.0.1, stopped at the end of the session."""
    import httpx

    executable = _label_studio_executable()
    base = tmp_path_factory.mktemp("label-studio")
    files_root = base / "files"
    files_root.mkdir()
    token = secrets.token_hex(20)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update({
        "PATH": f"{LABEL_STUDIO_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "LABEL_STUDIO_BASE_DATA_DIR": str(base / "data"),
        "LABEL_STUDIO_USERNAME": "admin@sugfw.test",
        "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(12),
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # must be set when the organisation is created
        # Both needed for a backend on 127.0.0.1; with only the first its webhook is not created.
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
    })
    log_path = base / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=base, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server's children stop with it
        )
    try:
        deadline = time.monotonic() + LABEL_STUDIO_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"label-studio exited with {server.returncode}:\n{_tail(log_path)}")
            try:
                if httpx.get(f"{url}/health", timeout=2.0).json().get("status") == "UP":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio did not answer /health within {LABEL_STUDIO_START_S:.0f} s:\n{_tail(log_path)}")
            time.sleep(1.0)
        yield LabelStudioServer(url=url, token=token, files_root=files_root, log_path=log_path)
    finally:
        _stop_process_group(server)


def _stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
