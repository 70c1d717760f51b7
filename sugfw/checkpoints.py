"""Reading weight files: one reader for every checkpoint the project loads, and weight identities.

Model weights (LiteMedSAM, SAM) and UNet training checkpoints are all read here, safely
(``weights_only``), with one error type for a missing, truncated or foreign file.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import torch

from sugfw.errors import CheckpointError


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The dict stored in ``path`` (tensors on the CPU); ``CheckpointError`` when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds {type(checkpoint).__name__}, expected a state dict")
    return checkpoint


def read_state_dict(path: Path) -> dict[str, Any]:
    """The model weights in ``path``: a bare state dict, or the ``"model"`` entry of a
    checkpoint."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds {type(state).__name__}, expected a state dict")
    return state


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks (weights are hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def random_weights_id() -> str:
    """Random weights are never the same twice, so their records must never be reused."""
    return f"random-{uuid.uuid4().hex}"
