"""After a training run: the unlabelled tasks' new queue order, by the configured round strategy.

The train job feeds every unlabelled (non-test) task's slice to ``RoundRanker.observe`` while it
pre-annotates it; ``scores`` then turns the round strategy's order (``sugfw.active``) into
prediction scores in [0, 1) (lower = label first). ``cold_start`` keeps each task's cold-start
score, so the queue is GSCU's as before; the UNet strategies cost T extra dropout passes per slice
(``SUGFW_MC_PASSES``). A task that could not be observed (its image failed) goes after every
observed one, in its cold-start order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from backend.jobs.queue_scores import queue_score
from sugfw.active import UnetSignals, rank_unlabelled, unet_signals
from sugfw.active.round_strategies import NEEDS_UNET, check_round_strategy

UNQUEUED = 1.0
"""Cold-start score of a task outside the cold-start queue: after every queued one."""


class RoundRanker:
    def __init__(self, strategy: str, passes: int, seed: int) -> None:
        self.strategy = check_round_strategy(strategy)
        self.passes = passes
        self.seed = seed
        self._signals: dict[int, UnetSignals] = {}

    @property
    def needs_unet(self) -> bool:
        return self.strategy in NEEDS_UNET

    def observe(self, task_id: int, model: torch.nn.Module, image: np.ndarray) -> None:
        """Monte-Carlo dropout signals of ``model`` on one (H, W) slice prepared for it."""
        if self.needs_unet:
            device = next(model.parameters()).device
            self._signals[task_id] = unet_signals(
                model, image[None], self.passes, self.seed, device, batch_size=1
            )

    def scores(self, cold_scores: Mapping[int, float | None], budget: int) -> dict[int, float]:
        """Score of every task in ``cold_scores`` (its cold-start score, None = unqueued)."""
        task_ids = sorted(cold_scores)
        cold = np.array(
            [UNQUEUED if cold_scores[t] is None else float(cold_scores[t]) for t in task_ids]
        )
        if not self.needs_unet:
            return dict(zip(task_ids, cold.tolist()))
        seen = [i for i, t in enumerate(task_ids) if t in self._signals]
        unseen = [i for i, t in enumerate(task_ids) if t not in self._signals]
        order = np.zeros(0, dtype=np.int64)
        if seen:  # none observed (every image failed): the previous order stands
            signals = _stack([self._signals[task_ids[i]] for i in seen])
            order = rank_unlabelled(
                self.strategy, cold[seen], signals, max(1, min(budget, len(seen))), self.seed
            )
        queue = [seen[i] for i in order] + sorted(unseen, key=lambda i: cold[i])
        return {task_ids[i]: queue_score(rank, len(queue)) for rank, i in enumerate(queue)}


def _stack(items: list[UnetSignals]) -> UnetSignals:
    return UnetSignals(
        entropy=np.concatenate([s.entropy for s in items]),
        mutual_information=np.concatenate([s.mutual_information for s in items]),
        features=np.concatenate([s.features for s in items]),
        foreground=np.concatenate([s.foreground for s in items]),
    )
