"""The "score" job and on-demand /predict, against an in-memory Label Studio project and a tiny
SAM."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.config import BackendConfig
from backend.jobs.cold_start_ranking import cluster_count
from backend.jobs.publish import publish_predictions
from backend.jobs.score_job import ScoreJob
from backend.jobs.slice_scorer import SCORE_CACHE_DIR, SliceScorer
from backend.jobs.storage import PredictionStore
from backend.labelstudio.annotations import annotation_label_map
from backend.labelstudio.brush import LabelConfigError, result_to_mask
from backend.labelstudio.images import ImageFetcher
from backend.labelstudio.prefill import region_results
from backend.model import SugfwModel
from sugfw.data import load_image_file
from sugfw.errors import BudgetError, InvalidInputError
from sugfw.everything import EverythingSettings
from sugfw.records import REGION_CAP, RecordIndex
from sugfw.scorer_options import parse_grid
from sugfw.scoring import Scorer, ScoringSettings
from sugfw.selection import get_strategy, gscu
from tests.fakes import CONTROL, LABEL_CONFIG, FakeProject, run_score_job

PROJECT = 7
BUDGET = 2


class CountingScorer(Scorer):
    """Counts the slices it really computes (not read from the cache)."""

    def _compute(self, image, slice_id):
        self.computed.append(slice_id)
        return super()._compute(image, slice_id)


def tiny_settings(model) -> ScoringSettings:
    return ScoringSettings(
        EverythingSettings.for_model(model, grid=(4,), pred_iou_thresh=0.0, stability_thresh=0.0),
        k=1,
    )


def write_png(path: Path, image: np.ndarray) -> None:
    scaled = (image - image.min()) / (image.max() - image.min()) * 255
    Image.fromarray(scaled.astype(np.uint8)).save(path)


@pytest.fixture
def world(tmp_path, tiny_sam, textured_slice, one_torch_thread):
    """Four good slices (tasks 10-12, 15), a broken file (13), a task without an image (14)."""
    root = tmp_path / "files"
    root.mkdir()
    tasks = []
    for i, task_id in enumerate([10, 11, 12, 15]):
        write_png(root / f"s{task_id}.png", textured_slice(32, 40, seed=i))
        tasks.append(
            {"id": task_id, "data": {"image": f"/data/local-files/?d=s{task_id}.png", "case": "c1"}}
        )
    (root / "s13.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    tasks.insert(3, {"id": 13, "data": {"image": "/data/local-files/?d=s13.png"}})
    tasks.insert(4, {"id": 14, "data": {"img": "/data/local-files/?d=s10.png"}})
    config = BackendConfig(
        state_dir=tmp_path / "state", budget=BUDGET, local_files_document_root=root
    )

    class World:
        pass

    w = World()
    w.root, w.config, w.project, w.model = root, config, FakeProject(tasks), tiny_sam
    w.store = PredictionStore(config.state_dir / "predictions")

    def scorer() -> SliceScorer:
        counting = CountingScorer(
            tiny_sam, tiny_settings(tiny_sam), cache_dir=config.state_dir / SCORE_CACHE_DIR
        )
        counting.computed = []
        return SliceScorer(config, scorer=counting)

    def job(slice_scorer: SliceScorer, fetcher=None) -> ScoreJob:
        return ScoreJob(
            w.config,
            slice_scorer,
            w.store,
            connect=lambda pid: w.project,
            fetcher=fetcher or (lambda: ImageFetcher(local_files_root=root)),
        )

    w.scorer, w.job = scorer, job
    return w


def library_records(world, task_ids: list[int]) -> list:
    scorer = Scorer(world.model, tiny_settings(world.model))  # no cache: computed afresh
    return [
        scorer.score_image(load_image_file(world.root / f"s{task_id}.png")) for task_id in task_ids
    ]


def expected_queue(world, task_ids: list[int], budget: int = BUDGET) -> tuple[dict, dict, dict]:
    """Rank, cluster and union mask per task, computed by the library alone (no cache, no
    backend)."""
    records = library_records(world, task_ids)
    features = np.stack([r.features_pgdr for r in records])
    selection = gscu(features, np.array([r.uncertainty for r in records]), budget, 0)
    ranks = selection.ranks()
    return (
        {t: int(ranks[i]) for i, t in enumerate(task_ids)},
        {t: int(selection.clusters[i]) for i, t in enumerate(task_ids)},
        {t: records[i].union_mask for i, t in enumerate(task_ids)},
    )


def test_job_writes_the_gscu_queue_and_skips_broken_tasks(world, caplog):
    scorer = world.scorer()
    with caplog.at_level(logging.WARNING, logger="backend"):
        progress = run_score_job(world.job(scorer))
    project = world.project
    version = project.model_version
    assert re.fullmatch(r"sugfw-litemedsam-[0-9a-f]{10}", version)
    assert project.sampling == "Uncertainty sampling"

    ranks, _, masks = expected_queue(world, [10, 11, 12, 15])
    written = project.predictions_of(version)
    assert sorted(written) == [10, 11, 12, 15]
    for task_id, prediction in written.items():
        assert prediction["score"] == ranks[task_id] / 4  # queue position over the 4 scored tasks
        # No cluster: Label Studio would serve the least-labelled cluster before the score order.
        assert "cluster" not in prediction
        items = prediction["result"]
        assert all(item["value"]["brushlabels"] == ["left_atrium"] for item in items)
        # The tiny SAM keeps no mask under these settings: nothing drawn, not an empty region.
        drawn = annotation_label_map(items, CONTROL, *masks[task_id].shape) > 0
        np.testing.assert_array_equal(drawn, masks[task_id])
        stored = world.store.get(task_id)
        assert {key: stored[key] for key in ("score", "model_version", "result")} == {
            key: prediction[key] for key in ("score", "model_version", "result")
        }

    # The queue lives in the scores alone: no task data is written (one request per task).
    assert all("priority" not in task["data"] for task in project.task_list)
    assert project.task_list[0]["data"]["case"] == "c1"
    assert project.views == 1
    assert (progress.done, progress.total) == (12, 12)  # six tasks scored, six written
    assert re.search(
        r"skipping task 13: task 13: image .*s13\.png is not a usable slice", caplog.text
    )
    assert "skipping task 14: task 14 has no image under data['image']" in caplog.text


@pytest.mark.parametrize(("grid", "kept"), [(2, 4), (4, 16)])
def test_each_kept_mask_is_published_as_its_own_brush_region(world, grid, kept):
    # Box NMS off: the tiny SAM keeps every mask of a grid² × 3 prompt grid that passes the area
    # filter (4 or 16 here), so the published result must hold min(kept, cap) regions.
    settings = ScoringSettings(
        EverythingSettings.for_model(
            world.model,
            grid=(grid,),
            pred_iou_thresh=0.0,
            stability_thresh=0.0,
            box_nms_thresh=1.0,
        ),
        k=1,
    )
    scorer = Scorer(world.model, settings, cache_dir=world.config.state_dir / SCORE_CACHE_DIR)
    run_score_job(world.job(SliceScorer(world.config, scorer=scorer)))
    written = world.project.predictions_of(world.project.model_version)
    assert sorted(written) == [10, 11, 12, 15]
    fresh = Scorer(world.model, settings)  # no cache: the library's own record
    for task_id, prediction in written.items():
        record = fresh.score_image(load_image_file(world.root / f"s{task_id}.png"))
        assert record.masks_kept == kept
        items = prediction["result"]
        assert len(items) == min(kept, REGION_CAP)
        assert len({item["id"] for item in items}) == len(items)  # one click deletes one region
        assert all(item["value"]["brushlabels"] == ["left_atrium"] for item in items)
        drawn = np.stack([result_to_mask(item) for item in items])
        np.testing.assert_array_equal(drawn, record.regions())
        areas = drawn.reshape(len(drawn), -1).sum(1)
        assert (np.diff(areas) <= 0).all()  # largest first
        if kept <= REGION_CAP:
            np.testing.assert_array_equal(drawn.any(0), record.union_mask)
        else:  # the cap leaves the smallest masks out
            assert not (drawn.any(0) & ~record.union_mask).any()
            assert drawn.any(0).sum() < record.union_mask.sum()


class CountingFetcher(ImageFetcher):
    fetched: list[int] = []

    def fetch(self, task, image_key):
        CountingFetcher.fetched.append(task["id"])
        return super().fetch(task, image_key)


def counting_fetcher(world):
    CountingFetcher.fetched = []
    return lambda: CountingFetcher(local_files_root=world.root)


def test_rerun_of_the_published_batch_downloads_computes_and_writes_nothing(world):
    run_score_job(world.job(world.scorer()))
    project = world.project
    version, creates = project.model_version, list(project.creates)

    scorer = world.scorer()
    run_score_job(world.job(scorer, fetcher=counting_fetcher(world)))
    # Only the two tasks that failed are tried again; the others' URLs are unchanged.
    assert CountingFetcher.fetched == [13, 14]
    assert scorer.scorer.computed == []
    assert project.model_version == version
    assert (project.creates, project.deleted) == (creates, [])


class Crash(Exception):
    """The process dying in the middle of a Label Studio call."""


class CrashingProject(FakeProject):
    """Raises on the n-th call of one write (create counts one prediction per call, so a crash
    can leave a chunk half imported; delete counts one version per call), after the calls before
    it took effect."""

    def __init__(self, tasks: list[dict], method: str | None = None, n: int = 0) -> None:
        super().__init__(tasks)
        self.crash_at, self.calls = (method, n), {}

    def arm(self, method: str | None, n: int = 0) -> None:
        self.crash_at, self.calls = (method, n), {}

    def _tick(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.crash_at == (method, self.calls[method]):
            raise Crash(f"killed during {method} call {self.calls[method]}")

    def create_predictions(self, predictions: dict) -> None:
        self.creates.append(sorted(predictions))
        for task_id, prediction in predictions.items():
            self._tick("create_predictions")
            self.add_prediction(task_id, prediction)

    def delete_version(self, model_version: str) -> int:
        self._tick("delete_version")
        return super().delete_version(model_version)

    def serve_by_prediction_score(self, model_version: str) -> None:
        self._tick("serve_by_prediction_score")
        super().serve_by_prediction_score(model_version)


def assert_converged(world, project, version: str, task_ids: list[int]) -> dict[int, dict]:
    """One prediction of ``version`` per task, the local store equal to Label Studio, and a
    further rerun writing nothing."""
    batch = project.predictions_of(version)  # asserts one prediction per task
    assert sorted(batch) == task_ids
    for task_id, prediction in batch.items():  # /predict answers what Label Studio holds
        stored = world.store.get(task_id)
        assert {k: stored[k] for k in ("score", "model_version", "result")} == {
            k: prediction[k] for k in ("score", "model_version", "result")
        }
    creates, deleted = list(project.creates), list(project.deleted)
    run_score_job(world.job(world.scorer()))
    assert project.model_version == version
    assert (project.creates, project.deleted) == (creates, deleted)
    return batch


@pytest.mark.parametrize(
    "method,n",
    [("create_predictions", 1), ("serve_by_prediction_score", 1)],
)
def test_rerun_after_a_crash_mid_import_converges(world, textured_slice, method, n):
    project = CrashingProject(world.project.task_list)
    world.project = project
    run_score_job(world.job(world.scorer()))  # a first batch, published whole
    version = project.model_version
    before = {p["id"]: dict(p) for p in project.stored}
    write_png(world.root / "s16.png", textured_slice(32, 40, seed=9))
    project.task_list.append(
        {"id": 16, "data": {"image": "/data/local-files/?d=s16.png", "case": "c2"}}
    )

    project.arm(method, n)
    with pytest.raises(Crash):
        run_score_job(world.job(world.scorer()))
    project.arm(None)
    run_score_job(world.job(world.scorer()))

    # The new task joined the published queue; nothing published before was rewritten.
    assert project.model_version == version
    batch = assert_converged(world, project, version, [10, 11, 12, 15, 16])
    assert {p["id"]: p for p in project.stored if p["id"] in before} == before
    ranks, _, _ = expected_queue(world, [10, 11, 12, 15, 16])
    # Its score sits between those of its neighbours in the new GSCU order (bounded by 0 and 1 at
    # the ends).
    by_rank = sorted(batch, key=ranks.__getitem__)
    at = by_rank.index(16)
    scores = {t: p["score"] for t, p in batch.items()}
    before = scores[by_rank[at - 1]] if at > 0 else 0.0
    after = scores[by_rank[at + 1]] if at < len(by_rank) - 1 else 1.0
    assert min(before, after) < scores[16] < max(before, after)
    assert project.task_list[-1]["data"]["case"] == "c2"


@pytest.mark.parametrize(
    "method,n",
    [
        ("create_predictions", 1),
        ("create_predictions", 4),
        ("serve_by_prediction_score", 1),
        ("delete_version", 1),
        ("delete_version", 3),
    ],
)
def test_rerun_after_a_crash_mid_republish_converges(world, method, n):
    project = CrashingProject(world.project.task_list)
    world.project = project
    run_score_job(world.job(world.scorer()))
    first_version = project.model_version
    project.add_prediction(
        10, {"model_version": "sugfw-litemedsam", "score": None, "result": []}
    )  # /predict
    project.add_prediction(11, {"model_version": "sugfw-unet-3", "score": 0.0, "result": []})
    project.add_prediction(
        12, {"model_version": "another-model", "score": 0.5, "result": []}
    )  # not ours
    world.config = dataclasses.replace(
        world.config, budget=3
    )  # another ordering: a new batch over every task

    project.arm(method, n)
    with pytest.raises(Crash):
        run_score_job(world.job(world.scorer()))
    project.arm(None)
    run_score_job(world.job(world.scorer()))

    version = project.model_version
    assert version not in (None, first_version)
    ranks, _, _ = expected_queue(world, [10, 11, 12, 15], budget=3)
    batch = assert_converged(world, project, version, [10, 11, 12, 15])
    assert {t: p["score"] for t, p in batch.items()} == {t: ranks[t] / 4 for t in batch}
    # Every earlier batch of ours is gone; someone else's prediction stays.
    assert sorted(
        (p["task"], p["model_version"]) for p in project.stored if p["model_version"] != version
    ) == [(12, "another-model")]


def test_up_to_date_until_tasks_or_settings_change(world, textured_slice):
    job = world.job(world.scorer())
    assert job.up_to_date(str(PROJECT)) is False  # never published
    run_score_job(job)
    assert world.job(world.scorer()).up_to_date(str(PROJECT)) is True
    original = world.config
    world.config = dataclasses.replace(original, k=original.k + 1)
    assert world.job(world.scorer()).up_to_date(str(PROJECT)) is False
    world.config = original
    assert world.job(world.scorer()).up_to_date(str(PROJECT)) is True
    write_png(world.root / "s16.png", textured_slice(32, 40, seed=9))
    world.project.task_list.append({"id": 16, "data": {"image": "/data/local-files/?d=s16.png"}})
    assert world.job(world.scorer()).up_to_date(str(PROJECT)) is False


def test_content_aware_cold_start_orders_the_queue_and_changes_its_settings(world):
    run_score_job(world.job(world.scorer()))  # GSCU's queue: every slice scored and cached
    world.config = dataclasses.replace(world.config, cold_start_strategy="gscu_content_aware")
    job = world.job(world.scorer())
    assert job.up_to_date(str(PROJECT)) is False  # another ordering: the queue is republished
    task_ids = [10, 11, 12, 15]
    index = RecordIndex.from_records(library_records(world, task_ids))
    ranks = get_strategy("gscu_content_aware").run(index, BUDGET, 0).ranks()
    expected = {t: int(ranks[i]) / len(task_ids) for i, t in enumerate(task_ids)}

    def published() -> dict[int, float]:
        batch = world.project.predictions_of(world.project.model_version)
        return {t: p["score"] for t, p in batch.items()}

    # Republished from the cache alone (no image is downloaded): content comes from the cache.
    run_score_job(world.job(world.scorer(), fetcher=counting_fetcher(world)))
    assert published() == expected
    assert CountingFetcher.fetched == [13, 14]  # only the unusable tasks are tried again

    # Entries written before content was cached lack it: those slices are read again, the
    # entries upgraded, and the queue is the same.
    entries = sorted((world.config.state_dir / SCORE_CACHE_DIR).glob("*/*.npz"))
    for entry in entries:
        with np.load(entry) as data:
            old = {name: data[name] for name in data.files if name != "content"}
        np.savez_compressed(entry, **old)
    run_score_job(world.job(world.scorer(), fetcher=counting_fetcher(world)))
    assert published() == expected
    assert sorted(CountingFetcher.fetched) == [10, 11, 12, 13, 14, 15]
    assert all("content" in np.load(entry).files for entry in entries)


def test_an_unknown_cold_start_strategy_is_refused_naming_the_choices():
    with pytest.raises(InvalidInputError, match=r"SUGFW_COLD_START_STRATEGY='typiclust'.*gscu"):
        BackendConfig.from_env({"SUGFW_COLD_START_STRATEGY": "typiclust"})
    chosen = BackendConfig.from_env({"SUGFW_COLD_START_STRATEGY": "gscu_content_aware"})
    assert chosen.cold_start_strategy == "gscu_content_aware"
    assert BackendConfig.from_env({}).cold_start_strategy == "gscu"


def test_setup_answers_the_published_version_of_the_project(world):
    model = SugfwModel(world.config)
    assert model.setup(f"{PROJECT}.1712345678", LABEL_CONFIG) == "sugfw-litemedsam"
    run_score_job(world.job(world.scorer()))
    assert model.setup(f"{PROJECT}.1712345678", LABEL_CONFIG) == world.project.model_version
    assert model.setup("8.1712345678", LABEL_CONFIG) == "sugfw-litemedsam"  # another project


def test_restart_mid_job_resumes_from_the_score_cache(world):
    class Crash(BaseException):
        """The process being killed (not an error the job could skip a task for)."""

    class CrashingFetcher(ImageFetcher):
        def fetch(self, task, image_key):
            if task["id"] == 12:
                raise Crash("process killed")
            return super().fetch(task, image_key)

    first = world.scorer()
    with pytest.raises(Crash):
        run_score_job(
            world.job(first, fetcher=lambda: CrashingFetcher(local_files_root=world.root))
        )
    assert first.scorer.computed == ["task-10", "task-11"]
    assert world.project.stored == []  # nothing published from a half-scored project

    restarted = world.scorer()
    run_score_job(world.job(restarted))
    assert restarted.scorer.computed == ["task-12", "task-15"]
    assert sorted(world.project.predictions_of(world.project.model_version)) == [10, 11, 12, 15]


def test_an_import_writes_only_the_new_tasks_and_keeps_unet_masks(world, textured_slice):
    run_score_job(world.job(world.scorer()))
    project = world.project
    version = project.model_version
    # After a training run the queue follows the UNet's predictions, published as the train job
    # publishes them.
    unet = "sugfw-unet-1"
    states = SugfwModel(world.config).projects
    publish_predictions(
        project,
        world.store,
        states,
        str(PROJECT),
        {
            task_id: {**world.store.get(task_id), "model_version": unet, "result": [{"unet": 1}]}
            for task_id in (10, 11, 12, 15)
        },
        unet,
        is_stale=lambda item_version: False,
        after_serving=lambda: states.set_served_version(PROJECT, unet),
    )
    before = {p["id"]: dict(p) for p in project.stored}

    write_png(world.root / "s16.png", textured_slice(32, 40, seed=9))
    project.task_list.append({"id": 16, "data": {"image": "/data/local-files/?d=s16.png"}})
    scorer = world.scorer()
    run_score_job(world.job(scorer))
    assert scorer.scorer.computed == ["task-16"]  # only the new slice is scored
    assert project.creates[-1] == [16]  # only its prediction is written
    assert project.deleted == []
    assert {p["id"]: p for p in project.stored if p["id"] in before} == before  # UNet masks kept
    assert project.model_version == unet
    served = project.predictions_of(unet)
    assert sorted(served) == [10, 11, 12, 15, 16]
    # SAM's regions (none: the tiny SAM keeps no mask under these settings), not a UNet result.
    new = Scorer(world.model, tiny_settings(world.model)).score_image(
        load_image_file(world.root / "s16.png")
    )
    assert served[16]["result"] == region_results(new, CONTROL)
    assert 0.0 <= served[16]["score"] <= 1.0
    assert project.predictions_of(version).keys() == {10, 11, 12, 15}  # the SAM batch, untouched


def test_project_without_any_usable_image_keeps_its_queue(world, caplog):
    for task in world.project.task_list:
        task["data"] = {"img": "x"}
    with caplog.at_level(logging.WARNING, logger="backend"):
        run_score_job(world.job(world.scorer()))
    assert world.project.stored == [] and world.project.model_version is None
    assert "none of its 6 task(s) could be scored" in caplog.text


# -- /predict on demand ---------------------------------------------------------------------------


def on_demand_model(world, deadline_s: float = 60.0, clock=None) -> SugfwModel:
    config = BackendConfig(
        state_dir=world.config.state_dir,
        predict_deadline_s=deadline_s,
        local_files_document_root=world.root,
    )
    kwargs = {"clock": clock} if clock else {}
    return SugfwModel(
        config,
        world.store,
        scorer=world.scorer(),
        fetcher=lambda: ImageFetcher(local_files_root=world.root),
        **kwargs,
    )


def test_predict_scores_a_new_task_once_outside_the_queue(world):
    model = on_demand_model(world)
    task = {"id": 11, "data": {"image": "/data/local-files/?d=s11.png"}}
    (first,) = model.predict([task], label_config=LABEL_CONFIG)
    assert (first["score"], first["model_version"]) == (None, "sugfw-litemedsam")
    assert "cluster" not in first
    (record,) = library_records(world, [11])
    drawn = annotation_label_map(first["result"], CONTROL, *record.union_mask.shape) > 0
    np.testing.assert_array_equal(drawn, record.union_mask)

    again = on_demand_model(world)
    assert again.predict([task], label_config=LABEL_CONFIG) == [first]
    assert again.scorer.scorer.computed == []  # served from the prediction store


def test_predict_stops_scoring_new_slices_at_the_deadline(world):
    now = [0.0]

    class SlowFetcher(ImageFetcher):
        def fetch(self, task, image_key):
            now[0] += 6.0  # each slice takes 6 s
            return super().fetch(task, image_key)

    model = on_demand_model(world, deadline_s=10.0, clock=lambda: now[0])
    model.fetcher = lambda: SlowFetcher(local_files_root=world.root)
    tasks = [{"id": t, "data": {"image": f"/data/local-files/?d=s{t}.png"}} for t in (10, 11, 12)]
    results = model.predict(tasks, label_config=LABEL_CONFIG)
    # Started at t=0 and t=6 (< 10); the third would start at t=12.
    assert model.scorer.scorer.computed == ["task-10", "task-11"]
    for result, record in zip(results, library_records(world, [10, 11])):
        drawn = annotation_label_map(result["result"], CONTROL, *record.union_mask.shape) > 0
        np.testing.assert_array_equal(drawn, record.union_mask)
    assert results[2] == model.empty_prediction()


def test_predict_with_a_broken_image_answers_empty_and_logs(world, caplog):
    model = on_demand_model(world)
    with caplog.at_level(logging.WARNING, logger="backend"):
        (result,) = model.predict(
            [{"id": 13, "data": {"image": "/data/local-files/?d=s13.png"}}],
            label_config=LABEL_CONFIG,
        )
    assert result == model.empty_prediction()
    assert "no prediction for task 13: task 13: image" in caplog.text


def test_predict_refuses_a_config_without_a_brush(world):
    model = on_demand_model(world)
    config = (
        '<View><Image name="image" value="$image"/>'
        '<Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
    )
    with pytest.raises(LabelConfigError, match="no BrushLabels or PolygonLabels tag"):
        model.predict(
            [{"id": 10, "data": {"image": "/data/local-files/?d=s10.png"}}], label_config=config
        )


# -- budget and config ----------------------------------------------------------------------------


def test_cluster_count_resolves_and_caps_the_budget():
    rows = np.eye(5, dtype=np.float32)
    assert cluster_count(0.5, rows) == 3  # 0.5 × 5 = 2.5 → round half up → 3
    assert cluster_count(10, rows) == 5  # more than the pool → the pool
    duplicated = np.repeat(np.eye(2, dtype=np.float32), 2, axis=0)  # 4 rows, 2 distinct
    assert cluster_count(3, duplicated) == 2
    with pytest.raises(BudgetError):
        cluster_count(1.5, rows)


@pytest.mark.parametrize(
    "text,expected",
    [("128", (128,)), ("64, 96,128", (64, 96, 128)), ("64 96", (64, 96)), (None, None)],
)
def test_grid_parses_one_or_more_sizes(text, expected):
    assert parse_grid(text, "SUGFW_GRID") == expected


@pytest.mark.parametrize("text", ["0", "64,-1", "abc", " , "])
def test_bad_grid_is_refused_naming_the_variable(text):
    with pytest.raises(InvalidInputError, match=r"SUGFW_GRID=.*expected positive integers"):
        parse_grid(text, "SUGFW_GRID")


def test_config_reads_grid_seed_and_deadline_from_the_environment(tmp_path):
    config = BackendConfig.from_env(
        {"SUGFW_GRID": "128", "SUGFW_SEED": "3", "SUGFW_PREDICT_DEADLINE_S": "20"}
    )
    assert (config.grid, config.seed, config.predict_deadline_s) == ((128,), 3, 20.0)


def test_the_served_app_runs_score_jobs_with_the_models_scorer(tmp_path):
    from backend._wsgi import build_app
    from backend.server.handlers import job_handlers

    app = build_app(BackendConfig(state_dir=tmp_path))
    jobs = app.config["SUGFW_JOBS"]
    try:
        assert isinstance(jobs.handlers["score"], ScoreJob)
    finally:
        jobs.stop()
    model = SugfwModel(
        BackendConfig(state_dir=tmp_path), scorer=SliceScorer(BackendConfig(state_dir=tmp_path))
    )
    assert (
        job_handlers(model.config, model.scorer, model.predictions)["score"].scorer is model.scorer
    )  # one model in memory


def test_predictions_deleted_by_hand_are_restored_at_the_next_publish(
    world, textured_slice, caplog
):
    # The published map says task 11 holds the served version; Label Studio's count says one is
    # missing: the next publish imports the version again whole, from the local store.
    run_score_job(world.job(world.scorer()))
    project = world.project
    version = project.model_version
    before = {t: p["score"] for t, p in project.predictions_of(version).items()}
    project.stored = [p for p in project.stored if p["task"] != 11]
    write_png(world.root / "s16.png", textured_slice(32, 40, seed=9))
    project.task_list.append({"id": 16, "data": {"image": "/data/local-files/?d=s16.png"}})
    with caplog.at_level(logging.WARNING, logger="backend"):
        run_score_job(world.job(world.scorer()))
    assert "Label Studio holds 3 prediction(s)" in caplog.text
    batch = assert_converged(world, project, version, [10, 11, 12, 15, 16])
    assert {t: batch[t]["score"] for t in before} == before
