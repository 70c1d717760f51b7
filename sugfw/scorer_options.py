"""The scoring settings, declared once for the ``sugfw`` command line and the backend.

``ScoringOptions`` is what changes a record (model, weights, grid, K, seed, thresholds, precision)
and how work is batched; ``sugfw.pipeline.ScorerSpec`` and ``backend.config.BackendConfig`` both
extend it. ``RayOptions`` names the Ray cluster to score on (``SUGFW_RAY_ADDRESS`` is read here
and nowhere else).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sugfw.errors import InvalidInputError
from sugfw.settings import INTEGER, NUMBER, PATH, Kind, at_least, from_environ, setting


def model_names() -> tuple[str, ...]:
    """The registered model names (imports torch: only when a parser or a check asks)."""
    from sugfw.models import MODEL_NAMES

    return tuple(MODEL_NAMES)


def runtime_names() -> tuple[str, ...]:
    """The encoder runtimes (``sugfw.models.runtime``; imported when a parser asks)."""
    from sugfw.models.runtime import RUNTIMES

    return RUNTIMES


def _check_model(value: str, name: str) -> None:
    if value not in model_names():
        raise InvalidInputError(
            f"{name}={value!r} is unknown; choose one of {', '.join(model_names())}"
        )


def parse_grid(text: str | None, name: str = "grid") -> tuple[int, ...] | None:
    """ "128" → (128,), "64,96,128" (commas or spaces) → (64, 96, 128); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        grid = tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        grid = ()
    if not grid or any(size < 1 for size in grid):
        raise InvalidInputError(
            f"{name}={text!r}: expected positive integers such as 128 or 64,96,128"
        )
    return grid


def _check_grid(value: tuple[int, ...], name: str) -> None:
    if not value or any(size < 1 for size in value):
        raise InvalidInputError(
            f"{name}={value}: expected one or more positive integers such as 128 or 64,96,128"
        )


GRID = Kind("integers", parse_grid)


@dataclass(frozen=True)
class ScoringOptions:
    """Every user-facing scoring setting; ``None`` means the model's own default."""

    model: str = setting(
        "litemedsam",
        "SUGFW_MODEL",
        "SAM-family model: litemedsam (bundled weights) or a SAM variant (needs --checkpoint)",
        check=_check_model,
        choices=model_names,
    )
    checkpoint: Path | None = setting(
        None, "SUGFW_CHECKPOINT", "checkpoint file (required for sam_vit_*)", kind=PATH
    )
    device: str = setting(
        "auto", "SUGFW_DEVICE", "auto (CUDA when available), cpu, cuda, cuda:1 ..."
    )
    k: int = setting(
        10,
        "SUGFW_K",
        "augmented everything-mode runs per slice",
        kind=INTEGER,
        check=at_least(1, "at least 1 augmented run per slice"),
    )
    seed: int = setting(
        0, "SUGFW_SEED", "seed of the per-slice augmentations (and of GSCU's k-means)", kind=INTEGER
    )
    grid: tuple[int, ...] | None = setting(
        None,
        "SUGFW_GRID",
        "everything-mode grid: box sides in canvas pixels (LiteMedSAM) or points per side (SAM), "
        "e.g. 128 or 64,96,128",
        kind=GRID,
        check=_check_grid,
        many=True,
        default_text="per model",
    )
    pred_iou_thresh: float | None = setting(
        None,
        "SUGFW_PRED_IOU_THRESH",
        "keep masks with predicted IoU above this",
        kind=NUMBER,
        default_text="per model",
    )
    stability_thresh: float | None = setting(
        None,
        "SUGFW_STABILITY_THRESH",
        "keep masks with stability score at least this",
        kind=NUMBER,
        default_text="per model",
    )
    max_area_fraction: float | None = setting(
        None,
        "SUGFW_MAX_AREA",
        "drop masks covering this fraction of the slice or more",
        kind=NUMBER,
        flag="--max-area",
        default_text="per model",
    )
    box_nms_thresh: float | None = setting(
        None,
        "SUGFW_BOX_NMS_THRESH",
        "box NMS IoU threshold (1.0 disables)",
        kind=NUMBER,
        default_text="per model",
    )
    uncertainty_sign: str = setting(
        "code",
        "SUGFW_UNCERTAINTY_SIGN",
        "Eq. 3: +M(1-M)+0.5 (code) or -M(1-M)+0.5 (paper's printed formula)",
        choices=lambda: ("code", "paper"),
    )
    alignment: str = setting(
        "content",
        "SUGFW_ALIGNMENT",
        "pool U onto the patches the slice covers (content) or the authors' whole-grid pooling",
        choices=lambda: ("content", "authors"),
    )
    precision: str = setting(
        "fp32", "SUGFW_PRECISION", "model arithmetic", choices=lambda: ("fp32", "bf16")
    )
    runtime: str = setting(
        "auto",
        "SUGFW_RUNTIME",
        "what runs LiteMedSAM's image encoder and IoU pass on a CPU: auto (OpenVINO, else ONNX "
        "Runtime, else torch), openvino, onnxruntime or torch; a GPU, bf16 and the SAM ViTs under "
        "auto use torch",
        choices=runtime_names,
    )
    prompt_batch: int | None = setting(
        None,
        "SUGFW_PROMPT_BATCH",
        "prompts per decoder call",
        kind=INTEGER,
        default_text="1024 on a GPU, 64 on a CPU",
    )
    encoder_batch: int | None = setting(
        None,
        "SUGFW_ENCODER_BATCH",
        "images per encoder call",
        kind=INTEGER,
        default_text="K+1 on a GPU, 1 on a CPU",
    )


@dataclass(frozen=True)
class RayOptions:
    """Where to score: a Ray cluster, or (unset) this process."""

    ray_address: str | None = setting(
        None,
        "SUGFW_RAY_ADDRESS",
        "score on the Ray cluster at ADDRESS ('auto': the one this machine joined; "
        "host:port); needs sugfw[ray]",
        flag="--ray",
        metavar="ADDRESS",
        default_text="unset: in this process",
    )
    ray_actors: int | None = setting(
        None,
        "SUGFW_RAY_ACTORS",
        "at most this many Ray actors",
        kind=INTEGER,
        default_text="one per GPU, else one per CPU of the cluster",
    )


def ray_options_from_env(environ: Mapping[str, str]) -> RayOptions:
    """The Ray settings the environment gives."""
    return RayOptions(**from_environ(RayOptions, environ))
