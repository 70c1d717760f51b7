"""A picture of one scored slice: the slice, its uncertainty map and its everything-mode union."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from sugfw.records import SliceRecord


def save_preview(image: np.ndarray, record: SliceRecord, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"{record.slice_id}")
    shown = axes[1].imshow(record.uncertainty_map.astype(np.float32), cmap="magma")
    axes[1].set_title(f"uncertainty U (mean {record.uncertainty:.4f})")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    axes[2].imshow(image, cmap="gray")
    axes[2].imshow(
        np.ma.masked_where(~record.union_mask, record.union_mask), cmap="autumn", alpha=0.5
    )
    axes[2].set_title(f"union of {record.masks_kept} masks (Eq. 2)")
    for axis in axes:
        axis.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
