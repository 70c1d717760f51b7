"""What a training run scored: DSC and HD95 per test case, and the run's history record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from backend.jobs.splits import TestCase, ValidationSplit, case_ids_of
from sugfw.metrics import CaseMetrics, case_metrics, summarise
from sugfw.segmentation.infer import segment

if TYPE_CHECKING:
    from sugfw.segmentation.train import TrainResult


def evaluate(model: Any, cases: Sequence[TestCase], device: str) -> list[CaseMetrics]:
    """DSC and HD95 (physical rule, mm) of the foreground of each case, in order."""
    return [
        case_metrics(
            segment(model, case.images, device) > 0, case.truth, case.spacing, rule="physical"
        )
        for case in cases
    ]


def run_record(
    version: str,
    split: ValidationSplit,
    cases: Sequence[TestCase],
    model: Any,
    seconds: float,
    result: TrainResult,
    iterations_planned: int,
) -> dict[str, Any]:
    """The history record of a run: sizes of its sets, how training went, and its test metrics
    per case (``model`` is tested on ``cases`` here)."""
    scores = evaluate(model, cases, str(next(model.parameters()).device))
    rows = [
        {
            "case_id": case.case_id,
            "source": case.source,
            "slices": int(case.images.shape[0]),
            "dice": item.dice,
            "hd95": item.hd95,
            "hd95_unit": item.hd95_unit,
        }
        for case, item in zip(cases, scores)
    ]
    summary = summarise(scores) if scores else None
    validated = bool(split.cases)
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_version": version,
        # Every annotated slice outside the test set, validation ones included: the x of the
        # learning curve is what annotators have done.
        "annotations": len(split.train) + len(split.val),
        "train_slices": len(split.train),
        "train_cases": len(case_ids_of(split.train)),
        "validation": {
            "source": split.source,
            "slices": len(split.val),
            "cases": len(split.cases),
            "case_ids": split.val_case_ids,
            "best_dice": result.best_val_dice if validated else None,
            "best_iteration": result.best_iteration if validated else None,
            "note": split.note,
        },
        "iterations": result.iterations,
        "iterations_planned": iterations_planned,
        "stopped_early": result.stopped_early,
        "train_seconds": round(seconds, 1),
        "test_set": sorted({case.source for case in cases}) or None,
        "cases": rows,
        "summary": summary,
        "note": None
        if rows
        else 'no test set: mark tasks with data.split = "test" or set SUGFW_TEST_DATA',
    }


def summary_line(record: Mapping[str, Any]) -> str:
    """One log line: version, annotations, and DSC / HD95 mean ± std (or why there is none)."""
    head = f"{record['model_version']} trained on {record['annotations']} annotated slice(s)"
    validation = record.get("validation") or {}
    if validation.get("cases"):
        head += (
            f" ({validation['slices']} of them held out for validation: "
            f"{validation['cases']} case(s), best Dice {validation['best_dice']:.3f})"
        )
    summary = record.get("summary")
    if not summary:
        return f"{head}; {record.get('note')}"
    return (
        f"{head}; test DSC {summary['dice_mean']:.3f} ± {summary['dice_std']:.3f}, "
        f"HD95 {summary['hd95_mean']:.2f} ± {summary['hd95_std']:.2f} {summary['hd95_unit']} "
        f"over {summary['cases']} case(s)"
    )
