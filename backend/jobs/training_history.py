"""What each training run scored, per project: a JSON history and a learning-curve PNG.

Files under ``<state dir>/training/<project id>/``: ``metrics.json`` (a list of run records,
oldest first, rewritten atomically) and ``learning_curve.png`` (mean test DSC ± std against the
number of annotated slices the run trained on). Kept free of torch so that ``GET /metrics`` is
cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from backend.jobs.storage import read_json
from sugfw.atomic import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

TRAINING_DIR = "training"
HISTORY_FILE = "metrics.json"
CURVE_FILE = "learning_curve.png"
UNET_VERSION_PREFIX = "sugfw-unet-"


def unet_version(run: int) -> str:
    """``sugfw-unet-<run>``: the model version of a project's ``run``-th training (1-based)."""
    return f"{UNET_VERSION_PREFIX}{run}"


class TrainingHistory:
    """Run records of every project under ``<state dir>/training``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / TRAINING_DIR

    def project_dir(self, project_id: str | int) -> Path:
        return self.root / str(int(project_id))

    def records(self, project_id: str | int) -> list[dict[str, Any]]:
        payload = read_json(self.project_dir(project_id) / HISTORY_FILE)
        return payload if isinstance(payload, list) else []

    def append(self, project_id: str | int, record: dict[str, Any]) -> None:
        """Add ``record`` and redraw the learning curve (a failed drawing is logged, never
        raised)."""
        records = [*self.records(project_id), record]
        atomic_write_json(self.project_dir(project_id) / HISTORY_FILE, records)
        try:
            draw_learning_curve(records, self.project_dir(project_id) / CURVE_FILE)
        except Exception as error:  # the numbers are on disk already; a plot is a convenience
            log.warning("project %s: learning curve not drawn: %s", project_id, error)

    def all(self) -> dict[str, list[dict[str, Any]]]:
        """{project id: records} for every project that has trained."""
        if not self.root.is_dir():
            return {}
        return {
            path.name: self.records(path.name)
            for path in sorted(self.root.iterdir(), key=lambda p: p.name)
            if path.is_dir() and path.name.isdigit() and (path / HISTORY_FILE).is_file()
        }


def draw_learning_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Mean test DSC (± std) against annotated slices, one point per run with a test summary."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    points = [
        (r["annotations"], r["summary"]["dice_mean"], r["summary"]["dice_std"])
        for r in records
        if r.get("summary")
    ]
    figure, axes = plt.subplots(figsize=(6, 4))
    try:
        if points:
            x, y, err = zip(*points)
            axes.errorbar(x, y, yerr=err, marker="o", capsize=3)
        else:
            axes.text(
                0.5, 0.5, "no test set yet", ha="center", va="center", transform=axes.transAxes
            )
        axes.set_xlabel("annotated slices")
        axes.set_ylabel("test DSC (mean ± std)")
        axes.set_ylim(0.0, 1.0)
        axes.grid(alpha=0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(figure)
