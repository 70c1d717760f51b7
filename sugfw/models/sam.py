"""SAM ViT-B/L/H from the ``segment-anything`` package, with a user-supplied checkpoint.

Official checkpoints (e.g. ``sam_vit_b_01ec64.pth`` for ViT-B, the paper's model) are downloaded
by the user. Everything mode prompts with a point grid and three masks per point, as SAM's own
automatic mask generator does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sugfw.checkpoints import file_sha256, random_weights_id, read_state_dict
from sugfw.errors import CheckpointError
from sugfw.models.base import EverythingSettings, SegmenterModel

# The authors' filters on top of SAM's automatic-mask defaults: predicted IoU > 0.95,
# stability > 0.95, area < H·W/4, box NMS 0.7, 32 × 32 points.
SAM_DEFAULTS = EverythingSettings(
    prompt_kind="points",
    grid=(32,),
    pred_iou_thresh=0.95,
    stability_thresh=0.95,
    max_area_fraction=0.25,
    box_nms_thresh=0.7,
    multimask=True,
)

# Expected official file name, and the encoder width that identifies each variant in a state dict.
SAM_VARIANTS = {
    "sam_vit_b": ("vit_b", "sam_vit_b_01ec64.pth", 768),
    "sam_vit_l": ("vit_l", "sam_vit_l_0b3195.pth", 1024),
    "sam_vit_h": ("vit_h", "sam_vit_h_4b8939.pth", 1280),
}


class SamModel(SegmenterModel):
    canvas_size = 1024
    quantise_8bit = True
    defaults = SAM_DEFAULTS

    def __init__(
        self, net: torch.nn.Module, device: torch.device, name: str, checkpoint_id: str
    ) -> None:
        super().__init__(net, device, checkpoint_id)
        self.name = name

    def normalise(self, canvas: torch.Tensor) -> torch.Tensor:
        mean = self.net.pixel_mean.to(canvas.device)
        std = self.net.pixel_std.to(canvas.device)
        return (canvas * 255.0 - mean) / std


def build_sam(name: str, device: torch.device, checkpoint: Path | None) -> SamModel:
    """Build ``sam_vit_b`` / ``sam_vit_l`` / ``sam_vit_h``; ``checkpoint=None`` gives random weights
    (only for timing and tests: such a model segments nothing meaningful)."""
    from segment_anything import sam_model_registry

    key, official_name, width = SAM_VARIANTS[name]
    net = sam_model_registry[key](checkpoint=None)
    if checkpoint is None:
        return SamModel(net, device, name, random_weights_id())
    state = read_state_dict(Path(checkpoint))
    found = state.get("image_encoder.patch_embed.proj.weight")
    if found is None or found.shape[0] != width:
        got = "no SAM image encoder" if found is None else f"encoder width {found.shape[0]}"
        raise CheckpointError(
            f"{checkpoint} does not match {name}: expected a SAM {key} checkpoint "
            f"(encoder width {width}, e.g. {official_name}), found {got}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{checkpoint} does not fit {name} ({official_name}): {str(err)[:300]}"
        ) from err
    return SamModel(net, device, name, file_sha256(Path(checkpoint)))
