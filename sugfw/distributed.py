"""Scoring sharded over a Ray cluster: a pool of actors, each holding one model, fed lazily.

The driver reads slices lazily, answers the ones already in its record cache itself, and keeps a
bounded number of the others in flight on the actors, so memory does not grow with the number of
slices. Records come back in input order with the same contract as ``pipeline.score_stream``, so
``pipeline.index_from_scored`` assembles ``records.npz`` exactly as the local path does. An actor
that dies is replaced and its slices resubmitted; slices it finished are in the cache and are not
recomputed. Ray is optional (``pip install 'sugfw[ray]'``) and imported only here, only when used.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from sugfw.cache import RecordCache
from sugfw.errors import SugfwError
from sugfw.records import SliceRecord, content_hash
from sugfw.scorer_options import ray_options_from_env

if TYPE_CHECKING:
    from sugfw.data import Slice
    from sugfw.pipeline import ScorerSpec

INSTALL_HINT = "pip install 'sugfw[ray]'"
MAX_ATTEMPTS = 3
"""Times one slice is sent to an actor before the run gives up (each try on a live actor)."""


class RayUnavailableError(SugfwError):
    """Scoring on a Ray cluster was asked for, but Ray is not installed."""


class ClusterError(SugfwError):
    """The Ray cluster cannot be reached, has no room for an actor, or keeps losing actors."""


def require_ray() -> ModuleType:
    """The ``ray`` module, or a ``RayUnavailableError`` naming the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise RayUnavailableError(
            f"scoring on a Ray cluster needs Ray, which is not installed: run `{INSTALL_HINT}` "
            "(or score without --ray)"
        ) from err
    return ray


def ray_address_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The cluster address in ``SUGFW_RAY_ADDRESS`` ("auto", "HOST:PORT", ...); None when unset.

    The setting is declared (and read) in ``sugfw.scorer_options``."""
    return ray_options_from_env(os.environ if environ is None else environ).ray_address


class ScoringActor:
    """One model on one device, scoring one slice per call (made a Ray actor by the pool)."""

    def __init__(self, spec: ScorerSpec, cache_dir: str, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.scorer = spec.build(Path(cache_dir))
        self.computed = 0
        # Count real computations (not cache hits) so the driver can report what a run cost.
        compute = self.scorer._compute

        def counted(image: Any, slice_id: str) -> SliceRecord:
            self.computed += 1
            return compute(image, slice_id)

        self.scorer._compute = counted  # type: ignore[method-assign]

    def describe(self) -> tuple[dict, str, int]:
        """Cache identity of this actor's scorer, the id of its node, and its process id."""
        import ray

        return self.scorer.identity(), ray.get_runtime_context().get_node_id(), os.getpid()

    def score(self, image: Any, slice_id: str, keep_maps: bool) -> tuple[SliceRecord, bool]:
        """The slice's record (written to this node's cache) and whether it had to be computed."""
        before = self.computed
        record = self.scorer.score_image(image, slice_id)
        if not keep_maps:
            record.union_mask = record.uncertainty_map = None  # type: ignore[assignment]
        return record, self.computed > before


@dataclass
class PoolStats:
    """What a run cost: slices sent to actors, computed there, answered by the driver's cache."""

    submitted: int = 0
    computed: int = 0
    from_cache: int = 0
    resubmitted: int = 0
    actors_replaced: int = 0


@dataclass
class _Slot:
    """One place in the pool; ``generation`` tells a dead actor's failures from its successor's."""

    handle: Any
    node_id: str | None
    busy: int = 0
    generation: int = 0


@dataclass
class _Entry:
    item: Slice
    image_hash: str
    record: SliceRecord | None = None


@dataclass
class _Job:
    """One slice sent to an actor, and the later slices with the same pixels waiting on it."""

    entry: _Entry
    slot: _Slot
    generation: int = 0
    attempts: int = 1
    same_hash: list[_Entry] = field(default_factory=list)


class RayScoringPool:
    """A pool of ``ScoringActor``s on the connected Ray cluster (call ``ray.init`` first).

    GPUs in the cluster (and a spec not pinned to the CPU): one actor per GPU, ``num_gpus=1``.
    Otherwise CPU actors of ``threads`` torch threads each (default 1), as many as fit on the
    nodes' CPUs. ``actors`` caps the count (e.g. to bound memory: each actor holds a model).
    """

    def __init__(
        self,
        spec: ScorerSpec,
        cache_dir: Path,
        actors: int | None = None,
        threads: int | None = None,
        max_in_flight: int | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        self.ray = require_ray()
        self.cache_dir = Path(cache_dir).resolve()  # actors run in other folders, other machines
        self.stats = PoolStats()
        gpus = 0 if spec.device == "cpu" else self._fit("GPU", 1)
        if gpus:
            count = min(actors or gpus, gpus)
            # Ray exposes the actor's GPU as the only visible one, so "cuda" is that GPU.
            self.spec = dataclasses.replace(spec, device="cuda")
            self.threads = threads
            options = {"num_gpus": 1, "num_cpus": threads or 1}
        else:
            self.threads = threads or 1
            fits = self._fit("CPU", self.threads)
            if not fits:
                raise ClusterError(
                    f"no node of the Ray cluster has {self.threads} CPUs for an actor"
                )
            count = min(actors or fits, fits)
            # A CPU actor must not take a GPU it has not reserved.
            self.spec = dataclasses.replace(spec, device="cpu")
            options = {"num_cpus": self.threads}
        # Ray restarts an actor whose process died and retries its calls; a pool-level
        # replacement (below) covers actors that cannot come back (killed, node lost).
        self._actor_class = self.ray.remote(ScoringActor).options(
            max_restarts=1, max_task_retries=1, **options
        )
        self.driver_node = self.ray.get_runtime_context().get_node_id()
        self.slots = [_Slot(self._new_actor(), None) for _ in range(count)]
        try:
            # An actor the cluster has no room for waits forever; say so instead.
            described = self.ray.get(
                [slot.handle.describe.remote() for slot in self.slots], timeout=start_timeout_s
            )
        except self.ray.exceptions.GetTimeoutError as err:
            self.close()
            raise ClusterError(
                f"{count} scoring actors did not start within {start_timeout_s:.0f} s: is the "
                "cluster busy, or do its workers lack the model weights? (see `ray status`)"
            ) from err
        for slot, (_, node_id, _) in zip(self.slots, described):
            slot.node_id = node_id
        self.identity = described[0][0]
        # The driver's own cache: reruns are answered without the cluster, and records computed on
        # other machines land here too (their caches are on their disks).
        self.cache = RecordCache(self.cache_dir, self.identity)
        self.max_in_flight = max_in_flight or 2 * count
        self.max_pending = 4 * self.max_in_flight  # reorder window: finished, waiting for the head

    @property
    def actors(self) -> list[Any]:
        """The live actor handles, one per slot."""
        return [slot.handle for slot in self.slots]

    def _fit(self, resource: str, per_actor: float) -> int:
        """Actors of ``per_actor`` units of ``resource`` that fit, node by node."""
        total = 0
        for node in self.ray.nodes():
            if node.get("Alive"):
                total += int(node.get("Resources", {}).get(resource, 0) // per_actor)
        return total

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.spec, str(self.cache_dir), self.threads)

    def score(
        self, slices: Iterable[Slice], keep_maps: bool = False
    ) -> Iterator[tuple[Slice, SliceRecord]]:
        """Score each slice on the pool (from the cache when it has it), lazily, in input order."""
        ray = self.ray
        source = iter(slices)
        pending: deque[_Entry] = deque()  # input order, not yet yielded
        in_flight: dict[Any, _Job] = {}
        by_hash: dict[str, _Job] = {}  # identical pixels in flight are computed once
        exhausted = False
        while True:
            while (
                not exhausted
                and len(in_flight) < self.max_in_flight
                and len(pending) < self.max_pending
            ):
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                entry = _Entry(item, content_hash(item.image))
                pending.append(entry)
                job = by_hash.get(entry.image_hash)
                if job is not None:
                    job.same_hash.append(entry)
                    continue
                # The pixels as hashed (float32), for an old entry's missing central brightness.
                cached = self.cache.get(entry.image_hash, np.asarray(item.image, dtype=np.float32))
                if cached is not None:
                    self.stats.from_cache += 1
                    entry.record = self._finish(cached, item.slice_id, keep_maps)
                    continue
                job = _Job(entry, self._least_busy())
                by_hash[entry.image_hash] = job
                self._submit(job, in_flight, keep_maps)
            while pending and pending[0].record is not None:
                entry = pending.popleft()
                yield entry.item, entry.record  # type: ignore[misc]
            if not pending:
                if exhausted:
                    return
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            job = in_flight.pop(ready[0])
            job.slot.busy -= 1
            try:
                record, computed = ray.get(ready[0])
            except (
                ray.exceptions.RayActorError,
                ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError,
            ) as err:
                self._retry(job, in_flight, keep_maps, err)
                continue
            del by_hash[job.entry.image_hash]
            self.stats.computed += int(computed)
            if job.slot.node_id != self.driver_node:
                self.cache.put(record)  # the actor's cache is on another machine's disk
            for entry in [job.entry, *job.same_hash]:
                entry.record = self._finish(record, entry.item.slice_id, keep_maps)

    def _finish(self, record: SliceRecord, slice_id: str, keep_maps: bool) -> SliceRecord:
        record = dataclasses.replace(record, slice_id=slice_id)
        if not keep_maps:
            record.union_mask = record.uncertainty_map = None  # type: ignore[assignment]
        return record

    def _least_busy(self) -> _Slot:
        return min(self.slots, key=lambda slot: slot.busy)

    def _submit(self, job: _Job, in_flight: dict[Any, _Job], keep_maps: bool) -> None:
        entry = job.entry
        # Maps travel back only when the caller wants them or the driver must cache them.
        maps = keep_maps or job.slot.node_id != self.driver_node
        ref = job.slot.handle.score.remote(entry.item.image, entry.item.slice_id, maps)
        job.generation = job.slot.generation
        job.slot.busy += 1
        in_flight[ref] = job
        self.stats.submitted += 1

    def _retry(
        self, job: _Job, in_flight: dict[Any, _Job], keep_maps: bool, err: Exception
    ) -> None:
        if job.attempts >= MAX_ATTEMPTS:
            raise ClusterError(
                f"slice {job.entry.item.slice_id}: lost its actor {job.attempts} times ({err})"
            ) from err
        if job.generation == job.slot.generation:
            # First news of this actor's death: put a fresh one in its place; its other calls in
            # flight fail too and are resubmitted below without replacing it again.
            self.ray.kill(job.slot.handle, no_restart=True)
            job.slot.handle = self._new_actor()
            job.slot.node_id = None  # unknown until it says; until then maps come back
            job.slot.generation += 1
            self.stats.actors_replaced += 1
        job.attempts += 1
        job.slot = self._least_busy()
        self.stats.resubmitted += 1
        self._submit(job, in_flight, keep_maps)

    def close(self) -> None:
        """Stop the pool's actors (the cluster stays up)."""
        for slot in self.slots:
            self.ray.kill(slot.handle, no_restart=True)
        self.slots = []

    def __enter__(self) -> RayScoringPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the one this machine is part of); returns
    whether this call started Ray in this process (and so should shut it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as err:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address!r} ({err}); start one with `ray start --head` "
            "(docs/ray.md)"
        ) from err
    return True


def score_on_ray(
    spec: ScorerSpec,
    slices: Iterable[Slice],
    cache_dir: Path,
    address: str,
    actors: int | None = None,
    threads: int | None = None,
    keep_maps: bool = False,
    progress: bool = True,
    total: int | None = None,
) -> Iterator[tuple[Slice, SliceRecord]]:
    """``score_stream`` on a Ray cluster: (slice, record) pairs in input order, cached under
    ``cache_dir``. Raises ``RayUnavailableError`` at once when Ray is not installed."""
    require_ray()
    return _score_on_ray(
        spec, slices, cache_dir, address, actors, threads, keep_maps, progress, total
    )


def _score_on_ray(
    spec: ScorerSpec,
    slices: Iterable[Slice],
    cache_dir: Path,
    address: str,
    actors: int | None,
    threads: int | None,
    keep_maps: bool,
    progress: bool,
    total: int | None,
) -> Iterator[tuple[Slice, SliceRecord]]:
    started = connect(address)
    try:
        with RayScoringPool(spec, cache_dir, actors, threads) as pool:
            scored = pool.score(slices, keep_maps)
            yield from tqdm(scored, total=total, disable=not progress, desc="scoring", unit="slice")
    finally:
        if started:
            require_ray().shutdown()
