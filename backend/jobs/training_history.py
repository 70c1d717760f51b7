"""What each training run scored, per project: a JSON history and a learning-curve PNG.

Files under ``<state dir>/training/<project id>/``: ``metrics.json`` (a list of run records,
oldest first, rewritten atomically) and ``learning_curve.png`` (mean test DSC and HD95 ± std
against the number of annotated slices of each run; ``GET /metrics/plot`` draws the same). Kept
free of torch so that ``GET /metrics`` is cheap.

Checkpoints: each run trains in ``run-<n>/`` (``best.pt``, ``last.pt``); after a run is recorded,
only the last ``keep_last_runs`` run folders and the one of the best run (highest mean test DSC,
else best validation Dice) are kept.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend.jobs.storage import read_json
from sugfw.atomic import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

TRAINING_DIR = "training"
HISTORY_FILE = "metrics.json"
CURVE_FILE = "learning_curve.png"
UNET_VERSION_PREFIX = "sugfw-unet-"
KEEP_LAST_RUNS = 3
_RUN_DIR = re.compile(r"^run-([0-9]+)$")
_keep_last_runs = KEEP_LAST_RUNS


def set_default_keep_last_runs(count: int) -> None:
    """Run folders kept besides the best by histories made without a count."""
    global _keep_last_runs
    _keep_last_runs = count


def unet_version(run: int) -> str:
    """``sugfw-unet-<run>``: the model version of a project's ``run``-th training (1-based)."""
    return f"{UNET_VERSION_PREFIX}{run}"


def public_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without the case ids of its validation and test sets (they name the volumes,
    often patients): what ``/metrics`` shows unless SUGFW_METRICS_DETAIL is set."""
    public = dict(record)
    validation = public.get("validation")
    if isinstance(validation, Mapping):
        public["validation"] = {k: v for k, v in validation.items() if k != "case_ids"}
    cases = public.get("cases")
    if isinstance(cases, list):
        public["cases"] = [
            {k: v for k, v in case.items() if k != "case_id"} if isinstance(case, Mapping) else case
            for case in cases
        ]
    return public


class TrainingHistory:
    """Run records of every project under ``<state dir>/training``."""

    def __init__(self, state_dir: Path, keep_last_runs: int | None = None) -> None:
        self.root = Path(state_dir) / TRAINING_DIR
        self.keep_last_runs = keep_last_runs

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
        keep = self.keep_last_runs if self.keep_last_runs is not None else _keep_last_runs
        prune_runs(self.project_dir(project_id), records, keep)
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


def best_run(records: list[dict[str, Any]]) -> int | None:
    """The run number (1-based) with the highest mean test DSC, else best validation Dice."""

    def quality(record: dict[str, Any]) -> tuple[float, float]:
        summary = record.get("summary") if isinstance(record.get("summary"), Mapping) else {}
        validation = record.get("validation")
        validation = validation if isinstance(validation, Mapping) else {}
        return (_float(summary.get("dice_mean")), _float(validation.get("best_dice")))

    scored = [(quality(r), run) for run, r in enumerate(records, start=1) if isinstance(r, dict)]
    best = max(scored, default=None)
    return None if best is None or best[0] == (-1.0, -1.0) else best[1]


def prune_runs(project_dir: Path, records: list[dict[str, Any]], keep_last: int) -> list[Path]:
    """Delete the ``run-<n>`` folders of ``project_dir`` other than the last ``keep_last`` (at
    least the newest, which the next run warm-starts from) and the best run's; the deleted."""
    runs = sorted(
        (int(match.group(1)), path)
        for path in (project_dir.iterdir() if project_dir.is_dir() else ())
        if path.is_dir() and (match := _RUN_DIR.match(path.name))
    )
    keep = {number for number, _ in runs[-max(keep_last, 1) :]} | {best_run(records)}
    removed = [path for number, path in runs if number not in keep]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if removed:
        log.info("%s: removed the checkpoints of %d older run(s)", project_dir, len(removed))
    return removed


def _float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -1.0
    return number if number == number else -1.0  # NaN: no score


def draw_learning_curve(records: list[dict[str, Any]], path: Path) -> None:
    """The learning curve of one project's runs (see :func:`learning_curve_png`) as a PNG file."""
    png = learning_curve_png({"": records})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png)


def learning_curve_png(histories: Mapping[str, list[dict[str, Any]]]) -> bytes:
    """PNG: mean test DSC and HD95 (± std) against annotated slices, one point per run with a test
    summary (labelled with its run number), one line per project (named when there are several).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure of its own, not pyplot: no global state, so concurrent requests cannot interfere.
    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    dsc_axes, hd_axes = figure.subplots(1, 2)
    units, plotted = set(), False
    for name, records in histories.items():
        points = [(run, r) for run, r in enumerate(records, start=1) if r.get("summary")]
        if not points:
            continue
        plotted = True
        label = f"project {name}" if name and len(histories) > 1 else None
        x = [r.get("annotations", 0) for _, r in points]
        for axes, key in ((dsc_axes, "dice"), (hd_axes, "hd95")):
            y = [float(r["summary"][f"{key}_mean"]) for _, r in points]
            err = [float(r["summary"][f"{key}_std"]) for _, r in points]
            axes.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
            for (run, _), xi, yi in zip(points, x, y):
                axes.annotate(
                    str(run), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
        units |= {str(r["summary"].get("hd95_unit", "mm")) for _, r in points}
    if not plotted:
        for axes in (dsc_axes, hd_axes):
            axes.text(
                0.5, 0.5, "no test set yet", ha="center", va="center", transform=axes.transAxes
            )
    dsc_axes.set_ylabel("test DSC (mean ± std)")
    dsc_axes.set_ylim(0.0, 1.0)
    hd_axes.set_ylabel(f"test HD95 (mean ± std, {'/'.join(sorted(units)) or 'mm'})")
    hd_axes.set_ylim(bottom=0.0)
    for axes in (dsc_axes, hd_axes):
        axes.set_xlabel("annotated slices (numbers: training run)")
        axes.grid(alpha=0.3)
        if plotted and len(histories) > 1:
            axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, format="png")
    return buffer.getvalue()
