"""The "train" job against an in-memory Label Studio project: tiny synthetic slices, a few SGD
steps."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import sugfw.segmentation
from backend.config import BackendConfig
from backend.jobs.queue import JobQueue
from backend.jobs.splits import normalise_slice, task_spacing
from backend.jobs.storage import PredictionStore
from backend.jobs.training_history import TrainingHistory
from backend.jobs.training_job import TrainJob
from backend.labelstudio.annotations import annotation_label_map, latest_submitted
from backend.labelstudio.brush import mask_to_result, parse_label_config, result_to_mask
from backend.labelstudio.images import ImageFetcher
from backend.model import SugfwModel
from backend.server.app import create_app
from sugfw.active import unet_signals
from sugfw.errors import InvalidInputError
from sugfw.metrics import case_metrics, summarise
from sugfw.segmentation import load_trained_unet, predict_volume
from sugfw.segmentation.preprocess import ZSCORE_EPS
from tests.fakes import (
    CONTROL,
    LABEL_CONFIG,
    SQUARE_SIDE,
    FakeProject,
    annotation,
    slice_with_square,
)

PROJECT = 3
SIZE = SQUARE_SIDE
COLD_VERSION = "sugfw-litemedsam-0123456789"
TEST_SPACING = [0.5, 0.75, 2.0]
"""(row, col, slice) mm, as import-volumes writes it."""


@pytest.fixture
def world(tmp_path, one_torch_thread, monkeypatch):
    """Tasks 1-4 annotated for training (4 with no region), 5-6 annotated test slices of case "t1",
    7-8 unlabelled with cold-start predictions, 9 an unlabelled test task."""
    root = tmp_path / "files"
    root.mkdir()
    tasks, truths = [], {}
    for task_id in range(1, 10):
        image, truth = slice_with_square(task_id)
        Image.fromarray(image).save(root / f"s{task_id}.png")
        truths[task_id] = truth
        tasks.append({"id": task_id, "data": {"image": f"/data/local-files/?d=s{task_id}.png"}})
    for task_id in (1, 2, 3):
        tasks[task_id - 1]["annotations"] = [annotation(truths[task_id], 10 + task_id)]
    tasks[3]["annotations"] = [annotation(np.zeros((SIZE, SIZE), dtype=bool), 14)]
    for task_id, index in ((5, 1), (6, 0)):
        tasks[task_id - 1]["data"].update(
            split="test", case_id="t1", slice_index=index, spacing=TEST_SPACING
        )
        # Test truth is the square's complement: if it reached training, the training masks would
        # show it.
        tasks[task_id - 1]["annotations"] = [annotation(~truths[task_id], 20 + task_id)]
    tasks[8]["data"].update(split="test", case_id="t2", slice_index=0)

    config = BackendConfig(
        state_dir=tmp_path / "state",
        train_iterations=6,
        train_crop=32,
        train_batch_size=2,
        device="cpu",
        # Every annotated slice is trained on here; test_training_trust.py covers validation.
        val_fraction=0.0,
        # The cold-start order is kept here; test_entropy_rounds_re_rank_... covers re-ranking.
        round_strategy="cold_start",
    )
    store = PredictionStore(config.state_dir / "predictions")
    project = FakeProject(tasks)
    cold = {7: (0.25, 1), 8: (0.5, 0), 9: (0.75, 2)}
    for task_id, (score, cluster) in cold.items():
        prediction = {
            "result": mask_to_result(truths[task_id], CONTROL),
            "score": score,
            "model_version": COLD_VERSION,
            "cluster": cluster,
        }
        store.put(task_id, prediction)
        project.create_predictions({task_id: prediction})

    calls = []
    real_train = sugfw.segmentation.train

    def recording_train(
        images, masks, val, train_config, checkpoint_dir, init_state=None, progress=True
    ):
        calls.append(
            {
                "images": list(images),
                "masks": [m.copy() for m in masks],
                "init_state": init_state,
                "dir": Path(checkpoint_dir),
            }
        )
        return real_train(
            images,
            masks,
            val,
            train_config,
            checkpoint_dir,
            init_state=init_state,
            progress=progress,
        )

    monkeypatch.setattr(sugfw.segmentation, "train", recording_train)

    class World:
        pass

    w = World()
    w.root, w.config, w.store, w.project, w.truths, w.cold, w.calls = (
        root,
        config,
        store,
        project,
        truths,
        cold,
        calls,
    )
    w.job = TrainJob(
        config,
        store,
        connect=lambda pid: project,
        fetcher=lambda: ImageFetcher(local_files_root=root),
    )
    w.clock = [0.0]
    w.queue = JobQueue(
        config.state_dir, {"train": w.job}, debounce_s=0.01, clock=lambda: w.clock[0]
    )
    return w


def burst(world, events: int = 5) -> int:
    for _ in range(events):
        world.queue.submit("train", PROJECT)
    world.clock[0] += 1.0
    count = world.queue.run_due()
    assert world.queue.snapshot()["last_error"] is None
    return count


def normalised(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float64)
    return ((x - x.mean()) / (x.std() + ZSCORE_EPS)).astype(np.float32)


def pixels(world, task_id: int) -> np.ndarray:
    return np.asarray(Image.open(world.root / f"s{task_id}.png"))


def test_a_burst_trains_once_on_the_training_annotations_only(world):
    assert burst(world) == 1
    assert len(world.calls) == 1
    call = world.calls[0]
    # Tasks 1-4 in id order; 4 is an empty annotation: an all-background example.
    expected = [
        world.truths[1],
        world.truths[2],
        world.truths[3],
        np.zeros((SIZE, SIZE), dtype=bool),
    ]
    assert len(call["masks"]) == 4
    for mask, truth in zip(call["masks"], expected):
        np.testing.assert_array_equal(mask, truth.astype(np.uint8))
    np.testing.assert_array_equal(call["images"][0], normalised(pixels(world, 1)))
    assert call["init_state"] is None
    assert len(TrainingHistory(world.config.state_dir).records(PROJECT)) == 1


def test_history_holds_the_metrics_of_the_test_case(world):
    burst(world)
    (record,) = TrainingHistory(world.config.state_dir).records(PROJECT)
    assert record["model_version"] == "sugfw-unet-1"
    assert record["annotations"] == 4
    assert (record["train_slices"], record["train_cases"]) == (4, 4)
    assert record["validation"]["source"] == "none"
    assert "SUGFW_VAL_FRACTION=0" in record["validation"]["note"]
    assert (record["iterations"], record["iterations_planned"], record["stopped_early"]) == (
        6,
        6,
        False,
    )
    assert record["test_set"] == ["tasks"]
    # Case t1 = task 6 (slice 0) then task 5 (slice 1); spacing (slice, row, col) = (2.0, 0.5,
    # 0.75).
    model = load_trained_unet(world.calls[0]["dir"] / "best.pt")
    volume = np.stack([normalised(pixels(world, 6)), normalised(pixels(world, 5))])
    predicted = predict_volume(model, volume) > 0
    truth = np.stack([~world.truths[6], ~world.truths[5]])
    expected = case_metrics(predicted, truth, (2.0, 0.5, 0.75))
    (case,) = record["cases"]
    assert (case["case_id"], case["slices"], case["hd95_unit"]) == ("t1", 2, "mm")
    assert case["dice"] == expected.dice and case["hd95"] == expected.hd95
    assert record["summary"] == summarise([expected])
    png = world.config.state_dir / "training" / str(PROJECT) / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unlabelled_tasks_get_unet_masks_in_the_cold_start_order(world):
    burst(world)
    model = load_trained_unet(world.calls[0]["dir"] / "best.pt")
    served = world.project.predictions_of("sugfw-unet-1")
    assert sorted(served) == [7, 8, 9]
    assert world.project.model_version == "sugfw-unet-1"
    for task_id, (score, _) in world.cold.items():
        # The cold-start score, and no cluster: Label Studio would serve by cluster first.
        assert served[task_id]["score"] == score and "cluster" not in served[task_id]
        assert world.store.get(task_id)["model_version"] == "sugfw-unet-1"
    for task_id in (7, 8):
        drawn = np.zeros((SIZE, SIZE), dtype=bool)
        for item in served[task_id]["result"]:
            drawn |= result_to_mask(item)
        unet = predict_volume(model, normalised(pixels(world, task_id))[None])[0] > 0
        np.testing.assert_array_equal(drawn, unet)
    # The unlabelled test task keeps SAM's mask: the model under test never pre-draws its own truth.
    assert served[9]["result"] == mask_to_result(world.truths[9], CONTROL)


def test_entropy_rounds_re_rank_the_unlabelled_tasks_by_the_new_unet(world):
    world.job.config = dataclasses.replace(world.config, round_strategy="entropy", mc_passes=3)
    burst(world)
    model = load_trained_unet(world.calls[0]["dir"] / "best.pt")
    served = world.project.predictions_of("sugfw-unet-1")
    entropy = {
        task_id: unet_signals(model, normalised(pixels(world, task_id))[None], 3, 0).entropy[0]
        for task_id in (7, 8)
    }
    first, second = sorted(entropy, key=lambda t: (-entropy[t], world.cold[t][0]))
    # The two slices by the new UNet's entropy, the unlabelled test task (not observed) last.
    assert [served[t]["score"] for t in (first, second, 9)] == [0.0, 1 / 3, 2 / 3]
    assert not any("cluster" in p for p in served.values())
    # The published map holds the new order, for a later import to be placed in.
    published = world.job.states.get(str(PROJECT)).published
    assert {t: published[t] for t in served} == {
        t: ("sugfw-unet-1", served[t]["score"]) for t in served
    }


def revise_annotation(world, task_id: int) -> None:
    """The annotator edits task ``task_id``'s annotation (same result, later update time)."""
    task = next(t for t in world.project.task_list if t["id"] == task_id)
    task["annotations"] = [{**task["annotations"][0], "updated_at": "2026-02-01T00:00:00Z"}]


def test_a_burst_over_unchanged_annotations_trains_nothing(world, caplog):
    burst(world)
    caplog.set_level(logging.INFO, logger="backend.jobs.training_job")
    assert burst(world, events=50) == 1  # the job runs, finds nothing new and stops
    assert len(world.calls) == 1
    assert len(TrainingHistory(world.config.state_dir).records(PROJECT)) == 1
    assert "annotations unchanged" in caplog.text
    revise_annotation(world, 2)
    assert burst(world) == 1
    assert len(world.calls) == 2


def test_a_stop_after_recording_publishes_that_run_instead_of_training_a_duplicate(
    world, monkeypatch
):
    """A crash between the history record and the publish: the rerun trains nothing, adds no
    record and publishes the recorded run's version."""
    real_publish = TrainJob.publish

    def crash(*args, **kwargs):
        raise RuntimeError("stopped mid-publish")

    monkeypatch.setattr(TrainJob, "publish", crash)
    for _ in range(3):
        world.queue.submit("train", PROJECT)
    world.clock[0] += 1.0
    world.queue.run_due()
    assert "stopped mid-publish" in str(world.queue.snapshot()["last_error"])
    assert len(TrainingHistory(world.config.state_dir).records(PROJECT)) == 1
    monkeypatch.setattr(TrainJob, "publish", real_publish)
    world.job.run(PROJECT, world.project, SimpleNamespace(update=lambda *args: None))
    records = TrainingHistory(world.config.state_dir).records(PROJECT)
    assert [r["model_version"] for r in records] == ["sugfw-unet-1"]
    assert len(world.calls) == 1  # trained once
    assert world.project.model_version == "sugfw-unet-1"
    assert sorted(world.project.predictions_of("sugfw-unet-1")) == [7, 8, 9]


def test_one_slice_failing_in_the_unet_costs_only_its_own_pre_annotation(world, monkeypatch):
    """A RuntimeError (CUDA out of memory, say) on one unlabelled slice: the run is published,
    that task keeps its cold-start mask and its place, the others get the UNet's."""
    import backend.jobs.training_job as training_job

    real_segment, real_publish, calls = training_job.segment, TrainJob.publish, []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return real_segment(*args, **kwargs)

    def publish_with_a_failing_slice(*args, **kwargs):  # tests on the test case run unharmed
        monkeypatch.setattr(training_job, "segment", failing_once)
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(TrainJob, "publish", publish_with_a_failing_slice)
    assert burst(world) == 1
    assert len(calls) == 2  # tasks 7 and 8; task 9 is a test task, never segmented
    served = world.project.predictions_of("sugfw-unet-1")
    assert sorted(served) == [7, 8, 9]
    cold = world.project.predictions_of(COLD_VERSION)
    assert served[7]["result"] == cold[7]["result"]  # task 7 came first and failed
    assert len(TrainingHistory(world.config.state_dir).records(PROJECT)) == 1


def test_second_run_warm_starts_from_the_first_and_replaces_its_predictions(world):
    burst(world)
    revise_annotation(world, 1)
    assert burst(world, events=3) == 1
    first_checkpoint = world.calls[0]["dir"] / "best.pt"
    assert Path(world.calls[1]["init_state"]) == first_checkpoint
    records = TrainingHistory(world.config.state_dir).records(PROJECT)
    assert [r["model_version"] for r in records] == ["sugfw-unet-1", "sugfw-unet-2"]
    assert world.project.predictions_of("sugfw-unet-1") == {}
    served = world.project.predictions_of("sugfw-unet-2")
    assert {t: p["score"] for t, p in served.items()} == {t: s for t, (s, _) in world.cold.items()}
    assert world.project.model_version == "sugfw-unet-2"
    assert sorted(world.project.predictions_of(COLD_VERSION)) == [
        7,
        8,
        9,
    ]  # the cold-start batch stays


def test_only_test_annotations_means_no_training(world, caplog):
    caplog.set_level(logging.INFO, logger="backend.jobs.training_job")
    for task in world.project.task_list:
        if task["data"].get("split") != "test":
            task.pop("annotations", None)
    assert burst(world) == 1
    assert world.calls == []
    assert TrainingHistory(world.config.state_dir).records(PROJECT) == []
    assert world.project.predictions_of("sugfw-unet-1") == {}
    assert "training skipped" in caplog.text


def test_without_a_test_set_training_still_happens_and_metrics_say_so(world):
    for task in world.project.task_list:
        task["data"].pop("split", None)
    burst(world)
    (record,) = TrainingHistory(world.config.state_dir).records(PROJECT)
    assert record["annotations"] == 6 and record["cases"] == [] and record["summary"] is None
    assert "no test set" in record["note"]


def test_metrics_route_serves_the_history(world):
    burst(world)
    app = create_app(world.config, SugfwModel(world.config), jobs=world.queue)
    body = app.test_client().get("/metrics").get_json()
    (record,) = body["training"][str(PROJECT)]
    assert record["model_version"] == "sugfw-unet-1"
    assert set(record["summary"]) >= {"dice_mean", "dice_std", "hd95_mean", "hd95_std"}
    assert body["jobs"]["completed"] == 1


def test_latest_submitted_skips_cancelled_and_takes_the_newest():
    items = [
        {"id": 1, "was_cancelled": False, "updated_at": "2026-01-02T00:00:00Z"},
        {"id": 2, "was_cancelled": True, "updated_at": "2026-01-03T00:00:00Z"},
        {"id": 3, "was_cancelled": False, "updated_at": "2026-01-01T00:00:00Z"},
    ]
    assert latest_submitted(items)["id"] == 1
    assert latest_submitted(items[1:2]) is None


def test_label_map_numbers_labels_by_config_order():
    config = parse_label_config(
        '<View><Image name="image" value="$image"/><BrushLabels name="label" toName="image">'
        '<Label value="a"/><Label value="b"/></BrushLabels></View>'
    )
    a, b = np.zeros((8, 8), dtype=bool), np.zeros((8, 8), dtype=bool)
    a[:2], b[5:] = True, True
    result = mask_to_result(b, config, "b") + mask_to_result(a, config, "a")
    labels = annotation_label_map(result, config, 8, 8)
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[:2], expected[5:] = 1, 2
    np.testing.assert_array_equal(labels, expected)
    foreign = [{**result[0], "value": {**result[0]["value"], "brushlabels": ["c"]}}]
    with pytest.raises(InvalidInputError, match="'c' is not one of"):
        annotation_label_map(foreign, config, 8, 8)


def test_spacing_from_task_data_or_one_millimetre():
    assert task_spacing({"spacing": [0.5, 0.5, 2]}) == (0.5, 0.5, 2.0)
    assert task_spacing({}) == (1.0, 1.0, 1.0)
    assert task_spacing({"spacing": [0.5, -1, 2]}) == (1.0, 1.0, 1.0)
    assert task_spacing({"spacing": "1mm"}) == (1.0, 1.0, 1.0)


def test_normalised_slice_has_zero_mean_unit_std():
    # [0, 2]: mean 1, std 1 → [-1, 1]; a constant slice → zeros.
    np.testing.assert_allclose(
        normalise_slice(np.array([[0.0, 2.0]])),
        np.array([[-1.0, 1.0]], dtype=np.float32),
        rtol=1e-5,
    )
    np.testing.assert_array_equal(
        normalise_slice(np.full((2, 2), 7.0)), np.zeros((2, 2), dtype=np.float32)
    )


def test_training_settings_come_from_the_environment(tmp_path):
    env = {"SUGFW_TRAIN_ITERATIONS": "12", "SUGFW_TRAIN_CROP": "64", "SUGFW_TRAIN_BATCH": "4"}
    config = BackendConfig.from_env(env)
    assert (config.train_iterations, config.train_crop, config.train_batch_size) == (12, 64, 4)
    with pytest.raises(InvalidInputError, match="SUGFW_TRAIN_ITERATIONS=0"):
        BackendConfig.from_env({"SUGFW_TRAIN_ITERATIONS": "0"})
    with pytest.raises(InvalidInputError, match="SUGFW_TRAIN_CROP='big'"):
        BackendConfig.from_env({"SUGFW_TRAIN_CROP": "big"})
    assert BackendConfig.from_env({}).train_recipe == "few_slice"
    assert BackendConfig.from_env({"SUGFW_TRAIN_RECIPE": "paper"}).train_recipe == "paper"
    with pytest.raises(InvalidInputError, match="SUGFW_TRAIN_RECIPE='adam'.*few_slice, paper"):
        BackendConfig.from_env({"SUGFW_TRAIN_RECIPE": "adam"})


def test_few_slice_trains_on_whole_slices_padded_to_the_largest(tmp_path):
    """Whole slices (the window is the largest side) up to SUGFW_TRAIN_CROP; the paper recipe
    keeps random crops of SUGFW_TRAIN_CROP."""
    from backend.jobs.splits import LabelledSlice
    from backend.jobs.training_job import TrainJob

    def item(shape):
        return LabelledSlice(
            1, np.zeros(shape, np.float32), np.zeros(shape, np.uint8), "c", 0, (1.0, 1.0, 1.0), None
        )

    slices = [item((183, 140)), item((212, 141))]
    job = TrainJob(BackendConfig(state_dir=tmp_path), predictions=None)
    assert job.training_window(slices) == 212
    assert (
        TrainJob(BackendConfig(state_dir=tmp_path, train_crop=160), None).training_window(slices)
        == 160
    )
    paper = BackendConfig(state_dir=tmp_path, train_recipe="paper", train_crop=128)
    assert TrainJob(paper, None).training_window(slices) == 128


def test_configured_volumes_are_tested_as_well(world, tmp_path):
    import dataclasses

    import nibabel as nib

    from backend.labelstudio.import_volumes import window_volume

    folder = tmp_path / "volumes"
    folder.mkdir()
    volume, truth = (
        np.zeros((SIZE, SIZE, 3), dtype=np.float32),
        np.zeros((SIZE, SIZE, 3), dtype=np.uint8),
    )
    for z in range(3):
        image, mask = slice_with_square(40 + z)
        volume[..., z], truth[..., z] = image, mask
    affine = np.diag([0.5, 0.75, 3.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), folder / "v1.nii.gz")
    nib.save(nib.Nifti1Image(truth, affine), folder / "v1_seg.nii.gz")
    world.job.config = dataclasses.replace(world.config, test_data=folder)
    burst(world)
    (record,) = TrainingHistory(world.config.state_dir).records(PROJECT)
    assert record["test_set"] == ["tasks", "volumes"]
    assert [case["case_id"] for case in record["cases"]] == ["t1", "v1"]
    # The volume is windowed as import-volumes windows it, each slice z-scored; spacing (slice, row,
    # col).
    model = load_trained_unet(world.calls[0]["dir"] / "best.pt")
    windowed = np.moveaxis(window_volume(volume), -1, 0)
    predicted = predict_volume(model, np.stack([normalised(s) for s in windowed])) > 0
    expected = case_metrics(predicted, np.moveaxis(truth > 0, -1, 0), (3.0, 0.5, 0.75))
    case = record["cases"][1]
    assert (case["slices"], case["dice"], case["hd95"]) == (3, expected.dice, expected.hd95)
    assert record["summary"]["cases"] == 2


def test_setup_answers_the_served_unet_version(tmp_path):
    # After training, the queue follows sugfw-unet-<n>; /setup (which Label Studio calls whenever it
    # reads the model's state) must answer it (the score job itself: the test below).
    from backend.config import BackendConfig
    from backend.jobs.state import PROJECT_STATE_DIR, ProjectStateStore
    from backend.model import SugfwModel

    config = BackendConfig(state_dir=tmp_path)
    states = ProjectStateStore(tmp_path / PROJECT_STATE_DIR)
    states.update(
        7,
        model_version="sugfw-litemedsam-abc",
        served_version="sugfw-litemedsam-abc",
        images={},
    )
    model = SugfwModel(config)
    assert model.setup("7.1700000000", None) == "sugfw-litemedsam-abc"
    states.set_served_version(7, "sugfw-unet-2")
    assert model.setup("7.1700000000", None) == "sugfw-unet-2"
    assert states.get(7).model_version == "sugfw-litemedsam-abc"  # the batch itself is unchanged


class ScoredProject(FakeProject):
    """FakeProject counting its writes, in order."""

    def __init__(self, tasks: list[dict]) -> None:
        super().__init__(tasks)
        self.writes: list[tuple] = []

    def create_predictions(self, predictions: dict) -> None:
        self.writes += [("create", task_id) for task_id in predictions]
        super().create_predictions(predictions)

    def delete_version(self, model_version: str) -> int:
        self.writes.append(("delete", model_version))
        return super().delete_version(model_version)

    def serve_by_prediction_score(self, model_version: str) -> None:
        super().serve_by_prediction_score(model_version)
        self.writes.append(("serve", model_version))


def test_an_unchanged_rescore_after_training_keeps_serving_the_unet_version(
    tmp_path, tiny_sam, one_torch_thread
):
    # Score → train → score again with nothing changed: the queue must still follow sugfw-unet-1,
    # with its predictions kept, and /setup must keep answering it.
    from backend.jobs.queue import Job, Progress
    from backend.jobs.score_job import ScoreJob
    from backend.jobs.slice_scorer import SCORE_CACHE_DIR, SliceScorer
    from sugfw.everything import EverythingSettings
    from sugfw.scoring import Scorer, ScoringSettings

    root = tmp_path / "files"
    root.mkdir()
    tasks, truths = [], {}
    for task_id in range(1, 6):
        image, truths[task_id] = slice_with_square(task_id)
        Image.fromarray(image).save(root / f"s{task_id}.png")
        tasks.append({"id": task_id, "data": {"image": f"/data/local-files/?d=s{task_id}.png"}})
    config = BackendConfig(
        state_dir=tmp_path / "state",
        budget=2,
        local_files_document_root=root,
        train_iterations=4,
        train_crop=32,
        train_batch_size=2,
        device="cpu",
    )
    store = PredictionStore(config.state_dir / "predictions")
    project = ScoredProject(tasks)
    settings = ScoringSettings(
        EverythingSettings.for_model(
            tiny_sam, grid=(4,), pred_iou_thresh=0.0, stability_thresh=0.0
        ),
        k=1,
    )
    scorer = SliceScorer(
        config, scorer=Scorer(tiny_sam, settings, cache_dir=config.state_dir / SCORE_CACHE_DIR)
    )
    fetcher = lambda: ImageFetcher(local_files_root=root)  # noqa: E731
    score = ScoreJob(config, scorer, store, connect=lambda pid: project, fetcher=fetcher)
    train = TrainJob(config, store, connect=lambda pid: project, fetcher=fetcher)

    def run(handler, kind: str) -> None:
        progress = Progress(Job(kind, str(PROJECT), 0.0, 0.0, 0.0))
        handler(progress.job, progress)

    run(score, "score")
    cold_version = project.model_version
    assert cold_version.startswith("sugfw-litemedsam-")
    for task_id in (1, 2):
        tasks[task_id - 1]["annotations"] = [annotation(truths[task_id], 10 + task_id)]
    tasks[2]["data"].update(split="test", case_id="t1", slice_index=0, spacing=TEST_SPACING)
    tasks[2]["annotations"] = [annotation(truths[3], 13)]
    run(train, "train")
    assert project.model_version == "sugfw-unet-1"
    unet = project.predictions_of("sugfw-unet-1")
    assert sorted(unet) == [4, 5]
    writes = len(project.writes)

    run(score, "score")
    assert project.model_version == "sugfw-unet-1"
    assert project.predictions_of("sugfw-unet-1") == unet
    assert sorted(project.predictions_of(cold_version)) == [1, 2, 3, 4, 5]
    assert project.writes[writes:] == [
        ("serve", "sugfw-unet-1")
    ]  # re-asserted, nothing else written
    assert SugfwModel(config).setup(f"{PROJECT}.1700000000", LABEL_CONFIG) == "sugfw-unet-1"
