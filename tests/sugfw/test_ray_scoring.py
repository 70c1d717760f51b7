"""Scoring on a Ray cluster: the local path's records bit for bit, every record once through a
killed actor, a rerun that computes nothing, and a clear error without Ray.

Each pool has 2 one-thread CPU actors; the cluster runs on this machine, listening on loopback
only.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from sugfw.cache import RecordCache
from sugfw.data import Slice
from sugfw.distributed import (
    INSTALL_HINT,
    RayScoringPool,
    RayUnavailableError,
    ray_address_from_env,
    require_ray,
    score_on_ray,
)
from sugfw.errors import SugfwError
from sugfw.pipeline import ScorerSpec, index_from_scored, score_stream
from sugfw.records import RecordIndex

# One box prompt per view and one augmentation: ~5 s a slice on one CPU thread.
SPEC = ScorerSpec(k=1, grid=(256,), device="cpu")


def phantoms() -> list[Slice]:
    """Four distinct 64 × 64 disks, then a copy of the second (same pixels, another id)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    images = []
    for i in range(4):
        disk = (yy - 24 - 4 * i) ** 2 + (xx - 28 - 3 * i) ** 2 < (9 + 2 * i) ** 2
        images.append((60 + 120 * disk + rng.normal(0, 3, disk.shape)).astype(np.float32))
    images.append(images[1].copy())
    return [
        Slice(f"phantom_z{i:03d}", image, "phantom", i, None, "synthetic")
        for i, image in enumerate(images)
    ]


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(RayUnavailableError, match=r"pip install 'sugfw\[ray\]'") as caught:
        score_on_ray(SPEC, phantoms(), tmp_path, "auto")
    assert isinstance(caught.value, SugfwError) and INSTALL_HINT in str(caught.value)
    with pytest.raises(RayUnavailableError):
        require_ray()


def test_address_from_the_environment():
    assert ray_address_from_env({"SUGFW_RAY_ADDRESS": " 10.0.0.5:6379 "}) == "10.0.0.5:6379"
    assert ray_address_from_env({"SUGFW_RAY_ADDRESS": ""}) is None
    assert ray_address_from_env({}) is None


# -- on a local cluster ----------------------------------------------------------------------------


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _listening_addresses(pids: set[int]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the TCP sockets these processes listen on (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            columns = line.split()
            if columns[3] == "0A" and columns[9] in inodes:  # 0A: LISTEN
                raw = columns[1].split(":")[0]
                # /proc prints each 32-bit word of the address in host (little-endian) order.
                words = [raw[i : i + 8] for i in range(0, len(raw), 8)]
                packed = b"".join(bytes.fromhex(word)[::-1] for word in words)
                addresses.append(ipaddress.ip_address(packed))
    return addresses


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants

    monkeypatch = pytest.MonkeyPatch()
    try:
        # Ray's servers bind every interface unless Ray runs as a single-machine cluster (its mode
        # on macOS and Windows), where the node address is 127.0.0.1 and every server binds to it.
        # The variable reaches Ray's own processes; the constant covers this one.
        monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        # 4 logical CPUs: the fixture's pool and a test's own pool of 2 one-thread actors each.
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        yield ray
    finally:
        ray.shutdown()
        monkeypatch.undo()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The local path on the same slices, one torch thread like each actor (same arithmetic)."""
    cache_dir = tmp_path_factory.mktemp("local") / "cache"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scorer = SPEC.build(cache_dir)
        index = index_from_scored(score_stream(scorer, phantoms(), progress=False))
    finally:
        torch.set_num_threads(previous)
    return index, RecordCache(cache_dir, scorer.identity())


@pytest.fixture(scope="module")
def ray_run(ray_cluster, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("ray") / "cache"
    with RayScoringPool(SPEC, cache_dir, actors=2, threads=1) as pool:
        index = index_from_scored(pool.score(phantoms()))
        yield pool, index, dict(vars(pool.stats))


def assert_same_index(a: RecordIndex, b: RecordIndex) -> None:
    for f in fields(RecordIndex):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), f.name


def assert_same_cached_records(index: RecordIndex, one: RecordCache, other: RecordCache) -> None:
    for image_hash in set(index.content_hashes):
        a, b = one.get(image_hash), other.get(image_hash)
        assert a is not None and b is not None
        for name in ("features_pgdr", "features_mean", "union_mask", "uncertainty_map"):
            assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
        assert (a.uncertainty, a.masks_kept) == (b.uncertainty, b.masks_kept)


@pytest.mark.slow
def test_records_equal_the_local_path_bit_for_bit(ray_run, local_run):
    pool, index, stats = ray_run
    local_index, local_cache = local_run
    assert_same_index(index, local_index)
    assert pool.cache.folder.name == local_cache.folder.name  # same settings, same cache key
    assert_same_cached_records(index, pool.cache, local_cache)
    # Four distinct images: the copy of the second is computed once, with the original.
    assert stats["computed"] == 4 and stats["submitted"] == 4
    assert len(pool.cache) == 4


@pytest.mark.slow
def test_rerun_computes_nothing(ray_run, local_run):
    pool, index, _ = ray_run
    # Contents, not modification times: a capped cache refreshes an entry's time on each hit.
    before = {p.name: p.read_bytes() for p in pool.cache.folder.glob("*.npz")}
    computed, submitted = pool.stats.computed, pool.stats.submitted
    rerun = index_from_scored(pool.score(phantoms()))
    assert_same_index(rerun, index)
    assert (pool.stats.computed, pool.stats.submitted) == (computed, submitted)
    assert {p.name: p.read_bytes() for p in pool.cache.folder.glob("*.npz")} == before
    # The actors' side too: a finished slice sent straight to an actor comes from its cache.
    ray = pool.ray
    for handle in pool.actors:
        record, was_computed = ray.get(handle.score.remote(phantoms()[0].image, "again", False))
        assert not was_computed
        assert record.features_pgdr.tobytes() == index.features_pgdr[0].tobytes()


@pytest.mark.slow
def test_a_killed_actor_still_yields_every_record_once(ray_cluster, local_run, tmp_path):
    local_index, _ = local_run
    scored = []
    with RayScoringPool(SPEC, tmp_path / "cache", actors=2, threads=1) as pool:
        victim = pool.actors[0]
        for pair in pool.score(phantoms()):
            if not scored:  # both actors still have slices in flight
                ray_cluster.kill(victim, no_restart=True)
            scored.append(pair)
        stats = pool.stats
    assert [item.slice_id for item, _ in scored] == [s.slice_id for s in phantoms()]
    assert_same_index(index_from_scored(scored), local_index)
    assert stats.actors_replaced == 1 and stats.resubmitted >= 1


@pytest.mark.slow
def test_the_cluster_listens_on_loopback_only(ray_run):
    addresses = _listening_addresses(_descendants(os.getpid()))
    assert addresses, "found no listening Ray process"
    assert all(_is_loopback(a) for a in addresses), addresses


@pytest.mark.slow
def test_score_on_ray_joins_the_running_cluster(ray_run, ray_cluster):
    pool, index, _ = ray_run
    scored = score_on_ray(SPEC, phantoms(), pool.cache_dir, "auto", actors=1, progress=False)
    assert_same_index(index_from_scored(scored), index)  # all from the cache written above
    assert ray_cluster.is_initialized()  # it did not start Ray, so it leaves it running


@pytest.mark.slow
def test_the_backend_score_job_on_ray_publishes_the_local_queue(ray_cluster, tmp_path):
    """``SUGFW_RAY_ADDRESS`` for the backend: the score job's new tasks are scored on the cluster
    and the published queue is the one the job publishes scoring in-process."""
    from backend.config import BackendConfig
    from backend.jobs.score_job import ScoreJob
    from backend.jobs.slice_scorer import SliceScorer
    from backend.jobs.storage import PredictionStore
    from backend.labelstudio.images import ImageFetcher
    from tests.fakes import FakeProject, run_score_job

    def data_url(image: np.ndarray) -> str:
        import base64
        import io

        from PIL import Image

        scaled = ((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(scaled).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    tasks = [
        {"id": 20 + i, "data": {"image": data_url(item.image)}} for i, item in enumerate(phantoms())
    ]
    published = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors' arithmetic, so the two runs agree to the bit
    try:
        for where, address in (("local", None), ("ray", "auto")):
            config = BackendConfig(
                state_dir=tmp_path / where,
                budget=2,
                k=SPEC.k,
                grid=SPEC.grid,
                device="cpu",
                ray_address=address,
                ray_actors=1,  # the module's pool holds two of the cluster's four CPUs
            )
            project = FakeProject([dict(task) for task in tasks])
            job = ScoreJob(
                config,
                SliceScorer(config),
                PredictionStore(config.state_dir / "p"),
                connect=lambda pid, project=project: project,
                fetcher=lambda: ImageFetcher(),
            )
            run_score_job(job)
            version = project.model_version
            published[where] = {
                t: (p["score"], p["result"]) for t, p in project.predictions_of(version).items()
            }
    finally:
        torch.set_num_threads(previous)
    assert sorted(published["ray"]) == [task["id"] for task in tasks]
    assert published["ray"] == published["local"]
