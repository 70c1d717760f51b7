"""``sugfw-import-volumes`` (or ``python -m backend.labelstudio.import_command``): upload NIfTI
volumes to a Label Studio project as PNG slice tasks.

It lives with the backend, not in the ``sugfw`` library, because it talks to Label Studio.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from backend.labelstudio.connection import connect
from backend.labelstudio.import_volumes import import_volumes, read_case_list
from backend.redact import redact_url
from sugfw.errors import SugfwError


def run(args: argparse.Namespace) -> int:
    """Slice and upload; print how many tasks were created."""
    url = args.url or os.environ.get("LABEL_STUDIO_URL", "").strip()
    api_key = args.api_key or os.environ.get("LABEL_STUDIO_API_KEY", "").strip()
    if not url or not api_key:
        missing = "--url / LABEL_STUDIO_URL" if not url else "--api-key / LABEL_STUDIO_API_KEY"
        raise SugfwError(
            f"{missing} is not set: expected where Label Studio answers and an API key for it"
        )
    test_cases = read_case_list(args.test_cases) if args.test_cases else None
    report = import_volumes(
        args.inputs,
        args.project,
        connect(url, api_key),
        slice_step=args.slice_step,
        limit=args.limit,
        axis=args.axis,
        split=args.split,
        test_cases=test_cases,
        batch_size=args.batch_size,
    )
    print(
        f"imported {len(report.task_ids)} slices as tasks of project {args.project} at "
        f"{redact_url(url)}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    imports = argparse.ArgumentParser(
        prog="sugfw-import-volumes",
        description="Cut NIfTI volumes into 8-bit PNG slices (each volume windowed on its own "
        "0.5-99.5 intensity "
        "percentiles) and upload them to a Label Studio project in batches. Each task's data "
        "carries "
        "image, case_id, slice_index, spacing [row, col, slice] in mm and, when asked, split. A "
        "batch "
        "that fails stops the import with the list of slices not imported (exit status 2).",
    )
    imports.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        help="NIfTI files, or folders of them (an MSD/nnU-Net folder's imagesTr/ is found by "
        "itself)",
    )
    imports.add_argument("--project", type=int, required=True, help="Label Studio project id")
    imports.add_argument("--url", help="Label Studio URL (default: $LABEL_STUDIO_URL)")
    imports.add_argument(
        "--api-key",
        help="legacy token or personal access token (default: $LABEL_STUDIO_API_KEY; "
        "prefer the variable: command lines are visible to other users)",
    )
    imports.add_argument(
        "--slice-step",
        type=int,
        default=1,
        help="import every n-th slice of each volume (default 1)",
    )
    imports.add_argument("--limit", type=int, help="import at most this many slices in all")
    imports.add_argument(
        "--axis",
        type=int,
        choices=[0, 1, 2],
        help="slice along this axis of the file's array (default: the axial axis from the affine)",
    )
    split = imports.add_mutually_exclusive_group()
    split.add_argument(
        "--split", choices=["train", "test"], help="mark every imported task with this split"
    )
    split.add_argument(
        "--test-cases",
        type=Path,
        help="file of case ids, one a line: those become split=test, the others split=train",
    )
    imports.add_argument(
        "--batch-size",
        type=int,
        default=50,
        help="slices per upload request (default 50; Label Studio takes at most "
        "100 files per request unless DATA_UPLOAD_MAX_NUMBER_FILES is raised)",
    )
    imports.add_argument("-v", "--verbose", action="store_true")
    return imports


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except SugfwError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
