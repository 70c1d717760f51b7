"""Prediction scores that order Label Studio's queue: lower is labelled first, always in [0, 1)
(Label Studio refuses scores outside [0, 1])."""

from __future__ import annotations


def queue_score(rank: int, n: int) -> float:
    """Prediction score of queue position ``rank`` among ``n``: in [0, 1), ascending with the
    rank."""
    return rank / n


def place_new_tasks(
    ranks: dict[int, int], scores: dict[int, float], new_ids: list[int]
) -> dict[int, float]:
    """Score of each new task, between those of its published neighbours.

    ``ranks`` is the full GSCU order over old and new tasks; ``scores`` holds the published scores
    of the old ones, which stay as they are, so an import writes only the new tasks' predictions.
    A run of new tasks between two old ones is spread evenly between their scores; before the
    first old task the bound is 0, after the last it is 1.
    """
    new = set(new_ids)
    order = sorted(ranks, key=ranks.__getitem__)
    placed: dict[int, float] = {}
    run: list[int] = []
    previous = 0.0
    for task_id in [*order, None]:
        if task_id in new:
            run.append(task_id)
            continue
        upper = 1.0 if task_id is None else float(scores[task_id])
        for j, waiting in enumerate(run, start=1):
            placed[waiting] = previous + (upper - previous) * j / (len(run) + 1)
        run = []
        if task_id is not None:
            previous = upper
    return placed
