"""Training a user can trust: the case-wise validation split, early stopping with the best
checkpoint kept, the sizes each run records, and the learning curve at ``GET /metrics/plot``."""

from __future__ import annotations

import importlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

import sugfw.segmentation
from backend.config import BackendConfig
from backend.jobs.queue import Job, JobQueue, Progress
from backend.jobs.splits import MIN_CASES_FOR_VALIDATION, LabelledSlice, split_validation
from backend.jobs.storage import PredictionStore
from backend.jobs.training_history import TrainingHistory
from backend.jobs.training_job import TrainJob
from backend.labelstudio.images import ImageFetcher
from backend.model import SugfwModel
from backend.server.app import create_app
from sugfw.errors import InvalidInputError
from sugfw.segmentation import TrainConfig, load_trained_unet
from sugfw.segmentation.train import BEST_CHECKPOINT, train
from tests.fakes import USER, FakeProject, annotation, basic, slice_with_square

PROJECT = 5
# The module itself: ``sugfw.segmentation.train`` as an attribute is the function it exports.
train_module = importlib.import_module("sugfw.segmentation.train")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- the case-wise split ------------------------------------------------------------------------


def slices_of(cases: dict[str, int], marked: dict[tuple[str, int], str] | None = None) -> list:
    """``cases``: case id → number of slices; ``marked``: (case, index) → data.split."""
    marked = marked or {}
    items, task_id = [], 0
    for case, count in cases.items():
        for index in range(count):
            task_id += 1
            items.append(
                LabelledSlice(
                    task_id,
                    np.zeros((4, 4), np.float32),
                    np.zeros((4, 4), np.uint8),
                    case,
                    index,
                    (1.0, 1.0, 1.0),
                    marked.get((case, index)),
                )
            )
    return items


def ids(items) -> set[int]:
    return {item.task_id for item in items}


def test_held_out_cases_are_whole_deterministic_and_a_share_of_the_cases():
    slices = slices_of({f"case{i}": 3 for i in range(10)})
    split = split_validation(slices, 0.2, seed=0)
    assert split.source == "held_out" and split.note is None
    assert len(split.cases) == 2 and len(split.val) == 6  # round(0.2 × 10) cases, all 3 slices
    train_cases = {item.case_id for item in split.train}
    val_cases = {item.case_id for item in split.val}
    assert not train_cases & val_cases  # no case on both sides
    assert train_cases | val_cases == {f"case{i}" for i in range(10)}
    assert ids(split.train) | ids(split.val) == ids(slices)
    assert sorted(split.val_case_ids) == sorted(val_cases)
    # Same input, same seed → same split; the order of the slices does not matter.
    again = split_validation(list(reversed(slices)), 0.2, seed=0)
    assert sorted(again.val_case_ids) == sorted(split.val_case_ids)
    seeds = {tuple(sorted(split_validation(slices, 0.2, seed).val_case_ids)) for seed in range(8)}
    assert len(seeds) > 1  # the seed does choose


def test_a_new_case_does_not_reshuffle_the_held_out_ones():
    before = split_validation(slices_of({f"case{i}": 2 for i in range(10)}), 0.2, seed=3)
    after = split_validation(slices_of({f"case{i}": 2 for i in range(11)}), 0.2, seed=3)
    assert len(after.cases) == 2  # round(0.2 × 11)
    # Either the same cases, or the new one took the place of one of them.
    assert set(after.val_case_ids) - set(before.val_case_ids) <= {"case10"}


def test_tasks_marked_val_are_the_validation_set_with_their_whole_case():
    slices = slices_of(
        {"a": 2, "b": 2, "c": 2, "d": 2, "e": 2},
        marked={("b", 0): "val", ("a", 1): "train", ("e", 0): "test"},
    )
    split = split_validation(slices, 0.2, seed=0)
    assert split.source == "marked"
    assert split.val_case_ids == ["b"]  # the marks replace the share
    # Slice 1 of case b is not marked, but trained on it would leak case b: it is held out too.
    assert sorted((item.case_id, item.slice_index) for item in split.val) == [("b", 0), ("b", 1)]
    assert "b" not in {item.case_id for item in split.train}
    assert len(split.train) == 8


def test_too_few_cases_or_no_share_means_no_validation_and_says_why():
    two = slices_of({"a": 5, "b": 5})
    assert MIN_CASES_FOR_VALIDATION == 3
    split = split_validation(two, 0.5, seed=0)
    assert (split.source, split.val, split.cases) == ("none", [], [])
    assert ids(split.train) == ids(two)
    assert "2 annotated case(s)" in split.note and "last weights kept" in split.note
    three = slices_of({"a": 1, "b": 1, "c": 1})
    assert len(split_validation(three, 0.2, seed=0).cases) == 1  # round(0.6) = 1 → at least one
    many = slices_of({"a": 4, "b": 4, "c": 4, "d": 4})
    # 0.9 of 4 cases would hold out 3 (12 slices) for 4 training slices: nothing is held out.
    assert split_validation(many, 0.9, seed=0).source == "none"
    off = split_validation(three, 0.0, seed=0)
    assert off.source == "none" and "SUGFW_VAL_FRACTION=0" in off.note


def test_no_case_is_held_out_while_it_would_outweigh_the_training_slices():
    """The main job's first 8 annotations: 5 slices of one case, 2 and 1 of two others. Holding a
    case out would train on fewer slices than it validates on, so all 8 train."""
    first_eight = slices_of({"a": 5, "b": 2, "c": 1})
    for seed in range(6):
        split = split_validation(first_eight, 0.2, seed=seed)
        if split.source == "none":
            assert ids(split.train) == ids(first_eight) and split.cases == []
            assert "trained on all" in split.note
        else:  # a small case was held out: it may not outweigh what is left
            assert len(split.train) >= len(split.val)
    assert any(split_validation(first_eight, 0.2, seed).source == "none" for seed in range(6))
    later = split_validation(slices_of({"a": 5, "b": 5, "c": 5, "d": 5, "e": 5}), 0.2, seed=0)
    assert later.source == "held_out" and len(later.val) == 5 and len(later.train) == 20


# -- early stopping and the best checkpoint ---------------------------------------------------


class PeakingValidator:
    """Scores that rise to a peak and then fall; keeps a copy of the weights it scored."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, model) -> float:
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return self.scores[len(self.seen) - 1]


def tiny_data(n: int = 4):
    pairs = [slice_with_square(seed) for seed in range(n)]
    images = [(image.astype(np.float32) - 100.0) / 50.0 for image, _ in pairs]
    return images, [truth.astype(np.uint8) for _, truth in pairs]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_stops_after_patience_and_keeps_the_peak_weights(tmp_path, one_torch_thread):
    images, masks = tiny_data()
    validator = PeakingValidator([0.1, 0.5, 0.9, 0.4, 0.3, 0.95, 0.99, 1.0])
    config = TrainConfig(
        iterations=8, batch_size=2, crop_size=32, eval_every=1, device="cpu", patience=2
    )
    result = train(images, masks, validator, config, tmp_path / "run", progress=False)
    # Peak at the 3rd validation; the 4th and 5th are worse → stop after 5 of 8 iterations (the
    # later, better scores are never reached).
    assert len(validator.seen) == 5
    assert (result.iterations, result.best_iteration, result.stopped_early) == (5, 3, True)
    assert result.best_val_dice == 0.9
    assert [record["val_dice"] for record in result.history] == [0.1, 0.5, 0.9, 0.4, 0.3]
    assert same_weights(result.best_state, validator.seen[2])
    assert not same_weights(result.best_state, validator.seen[4])  # not the last weights
    kept = load_trained_unet(tmp_path / "run" / BEST_CHECKPOINT).state_dict()
    assert same_weights(kept, validator.seen[2])
    # Run again on the same folder (a restart): it resumes, sees the patience spent, stops at once.
    again = PeakingValidator([1.0] * 8)
    resumed = train(images, masks, again, config, tmp_path / "run", progress=False)
    assert again.seen == [] and resumed.iterations == 5 and resumed.stopped_early
    assert same_weights(resumed.best_state, validator.seen[2])


def test_without_patience_every_iteration_runs_as_before(tmp_path, one_torch_thread):
    images, masks = tiny_data()
    validator = PeakingValidator([0.1, 0.9, 0.2, 0.1, 0.0, 0.0])
    config = TrainConfig(iterations=6, batch_size=2, crop_size=32, eval_every=1, device="cpu")
    assert config.patience is None
    result = train(images, masks, validator, config, tmp_path / "run", progress=False)
    assert (result.iterations, result.best_iteration, result.stopped_early) == (6, 2, False)
    assert same_weights(result.best_state, validator.seen[1])
    # A peak at the very last validation is not an early stop either.
    late = PeakingValidator([0.1, 0.2])
    config = TrainConfig(
        iterations=2, batch_size=2, crop_size=32, eval_every=1, device="cpu", patience=1
    )
    result = train(images, masks, late, config, tmp_path / "late", progress=False)
    assert (result.iterations, result.stopped_early) == (2, False)
    with pytest.raises(InvalidInputError, match="patience"):
        TrainConfig(iterations=2, patience=0)


def test_no_early_stop_before_min_iterations(tmp_path, one_torch_thread):
    images, masks = tiny_data()
    flat = PeakingValidator([0.0] * 8)  # a network still predicting nothing
    config = TrainConfig(
        iterations=8,
        batch_size=2,
        crop_size=32,
        eval_every=1,
        device="cpu",
        patience=1,
        min_iterations=5,
    )
    result = train(images, masks, flat, config, tmp_path / "run", progress=False)
    assert (result.iterations, result.best_iteration, result.stopped_early) == (5, 1, True)


# -- the train job: what it trains on, what it keeps, what it records --------------------------


@pytest.fixture
def project(tmp_path, one_torch_thread):
    """Four cases (c0..c3) of two annotated slices each, one unlabelled task, PNGs on disk."""
    root = tmp_path / "files"
    root.mkdir()
    tasks = []
    for task_id in range(1, 10):
        image, truth = slice_with_square(task_id)
        Image.fromarray(image).save(root / f"s{task_id}.png")
        data = {"image": f"/data/local-files/?d=s{task_id}.png"}
        task = {"id": task_id, "data": data}
        if task_id <= 8:
            data.update(case_id=f"c{(task_id - 1) // 2}", slice_index=(task_id - 1) % 2)
            task["annotations"] = [annotation(truth, 100 + task_id)]
        tasks.append(task)
    return root, FakeProject(tasks)


def run_job(tmp_path, root, fake, **settings) -> tuple[dict, list[dict]]:
    """One training run of the job on ``fake``; its record and what ``train`` was given."""
    calls = []
    real_train = sugfw.segmentation.train

    def recording_train(images, masks, val, config, checkpoint_dir, **kwargs):
        calls.append({"images": list(images), "config": config, "dir": checkpoint_dir})
        return real_train(images, masks, val, config, checkpoint_dir, **kwargs)

    config = BackendConfig(
        state_dir=tmp_path / "state",
        train_crop=32,
        train_batch_size=2,
        device="cpu",
        **settings,
    )
    job = TrainJob(
        config,
        PredictionStore(config.state_dir / "predictions"),
        connect=lambda pid: fake,
        fetcher=lambda: ImageFetcher(local_files_root=root),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sugfw.segmentation, "train", recording_train)
        progress = Progress(Job("train", str(PROJECT), 0.0, 0.0, 0.0))
        job(progress.job, progress)
    (record,) = TrainingHistory(config.state_dir).records(PROJECT)[-1:]
    return record, calls


def test_a_run_holds_out_a_validation_case_and_records_the_sizes(tmp_path, project):
    root, fake = project
    record, (call,) = run_job(
        tmp_path, root, fake, train_epochs=2, train_max_iterations=100, val_every=2
    )
    validation = record["validation"]
    assert validation["source"] == "held_out"
    assert (validation["cases"], validation["slices"]) == (1, 2)  # round(0.2 × 4) = 1 case
    (held_out,) = validation["case_ids"]
    assert held_out in {"c0", "c1", "c2", "c3"}
    assert (record["train_slices"], record["train_cases"], record["annotations"]) == (6, 3, 8)
    # The held-out case's slices never reach training.
    assert len(call["images"]) == 6
    # 2 epochs × ceil(6 slices / batch 2) = 6 iterations, validated every 2.
    assert (call["config"].iterations, call["config"].eval_every) == (6, 2)
    assert (record["iterations_planned"], record["iterations"], record["stopped_early"]) == (
        6,
        6,
        False,
    )
    assert 0.0 <= validation["best_dice"] <= 1.0
    assert validation["best_iteration"] in (2, 4, 6)
    saved = torch.load(call["dir"] / BEST_CHECKPOINT, weights_only=False)
    assert (saved["iteration"], saved["val_dice"]) == (
        validation["best_iteration"],
        validation["best_dice"],
    )


def test_the_epoch_schedule_is_capped(tmp_path, project):
    root, fake = project
    record, (call,) = run_job(
        tmp_path, root, fake, train_epochs=50, train_max_iterations=4, val_fraction=0.0
    )
    assert call["config"].iterations == 4  # 50 × 4 = 200 > the cap
    assert (record["iterations"], record["iterations_planned"]) == (4, 4)
    assert len(call["images"]) == 8 and record["validation"]["source"] == "none"


def test_the_job_stops_early_and_serves_the_peak_checkpoint(tmp_path, project, monkeypatch):
    root, fake = project
    validators = []

    def scripted(cases, config):
        assert len(cases) == 1 and cases[0][0].shape == (2, 32, 32)  # the held-out case, stacked
        validators.append(PeakingValidator([0.2, 0.6, 0.3, 0.1, 0.1] + [1.0] * 10))
        return validators[-1]

    monkeypatch.setattr(train_module, "case_dice_validator", scripted)
    record, (call,) = run_job(
        tmp_path,
        root,
        fake,
        train_epochs=10,
        train_max_iterations=100,
        val_every=3,
        early_stop_patience=2,
    )
    (validator,) = validators
    assert call["config"].iterations == 30  # 10 epochs × ceil(6 / 2)
    # Patience is spent at the 4th validation (iteration 12), but no stop before half the run:
    # the 5th (iteration 15) is no better either, and the run ends there.
    assert call["config"].min_iterations == 15
    assert len(validator.seen) == 5 and record["iterations"] == 15
    assert record["stopped_early"] is True
    assert (record["validation"]["best_dice"], record["validation"]["best_iteration"]) == (0.6, 6)
    kept = load_trained_unet(call["dir"] / BEST_CHECKPOINT).state_dict()
    assert same_weights(kept, validator.seen[1])  # the peak's weights, not the last ones
    assert fake.model_version == "sugfw-unet-1"  # ... and they pre-annotated the unlabelled task


def test_marked_validation_tasks_are_honoured_by_the_job(tmp_path, project):
    root, fake = project
    fake.task_list[6]["data"]["split"] = "val"  # task 7: slice 0 of case c3
    record, (call,) = run_job(tmp_path, root, fake, train_epochs=1, val_every=1)
    assert record["validation"]["source"] == "marked"
    assert record["validation"]["case_ids"] == ["c3"]
    assert len(call["images"]) == 6 and record["train_cases"] == 3


def test_two_cases_train_on_everything_and_record_the_fallback(tmp_path, project):
    root, fake = project
    for task in fake.task_list[4:8]:
        task.pop("annotations")  # only c0 and c1 annotated
    record, (call,) = run_job(tmp_path, root, fake, train_epochs=1)
    assert len(call["images"]) == 4
    assert record["validation"]["source"] == "none"
    assert "2 annotated case(s)" in record["validation"]["note"]
    assert record["validation"]["best_dice"] is None and record["stopped_early"] is False
    assert call["config"].eval_every == call["config"].iterations  # one evaluation: keep last


def test_every_case_marked_val_means_no_training(tmp_path, project):
    root, fake = project
    for task in fake.task_list[:8]:
        task["data"]["split"] = "val"
    config = BackendConfig(state_dir=tmp_path / "state", device="cpu")
    job = TrainJob(
        config,
        PredictionStore(config.state_dir / "predictions"),
        connect=lambda pid: fake,
        fetcher=lambda: ImageFetcher(local_files_root=root),
    )
    progress = Progress(Job("train", str(PROJECT), 0.0, 0.0, 0.0))
    assert job.run(str(PROJECT), fake, progress) is None
    assert TrainingHistory(config.state_dir).records(PROJECT) == []


def test_training_settings_are_read_and_checked():
    config = BackendConfig.from_env(
        {
            "SUGFW_VAL_FRACTION": "0.3",
            "SUGFW_TRAIN_EPOCHS": "7",
            "SUGFW_TRAIN_MAX_ITERATIONS": "70",
            "SUGFW_EARLY_STOP_PATIENCE": "0",
            "SUGFW_VAL_EVERY": "9",
        }
    )
    assert (
        config.val_fraction,
        config.train_epochs,
        config.train_max_iterations,
        config.early_stop_patience,
        config.val_every,
        config.train_iterations,
    ) == (0.3, 7, 70, 0, 9, None)
    defaults = BackendConfig()
    assert (defaults.val_fraction, defaults.train_epochs, defaults.train_max_iterations) == (
        0.2,
        100,
        400,
    )
    for env, message in (
        ({"SUGFW_VAL_FRACTION": "1"}, "SUGFW_VAL_FRACTION=1.0"),
        ({"SUGFW_VAL_FRACTION": "-0.1"}, "SUGFW_VAL_FRACTION"),
        ({"SUGFW_TRAIN_EPOCHS": "0"}, "SUGFW_TRAIN_EPOCHS=0"),
        ({"SUGFW_TRAIN_MAX_ITERATIONS": "0"}, "SUGFW_TRAIN_MAX_ITERATIONS=0"),
        ({"SUGFW_EARLY_STOP_PATIENCE": "-1"}, "SUGFW_EARLY_STOP_PATIENCE=-1"),
        ({"SUGFW_VAL_EVERY": "x"}, "SUGFW_VAL_EVERY='x'"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            BackendConfig.from_env(env)


# -- GET /metrics/plot -------------------------------------------------------------------------


def run_record(annotations: int, dice: float | None) -> dict:
    summary = (
        None
        if dice is None
        else {
            "cases": 2,
            "dice_mean": dice,
            "dice_std": 0.05,
            "hd95_mean": 10 * (1 - dice),
            "hd95_std": 1.0,
            "hd95_unit": "mm",
        }
    )
    return {"model_version": "x", "annotations": annotations, "summary": summary}


def metrics_client(tmp_path, auth: bool = False):
    config = BackendConfig(
        state_dir=tmp_path / "state",
        basic_auth_user=USER if auth else None,
        basic_auth_pass="pw" if auth else None,
    )
    jobs = JobQueue(config.state_dir, debounce_s=5.0)
    return create_app(config, SugfwModel(config), jobs).test_client(), config


def png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == PNG_MAGIC
    return Image.open(io.BytesIO(body)).size


def test_metrics_plot_is_a_png_of_the_learning_curve(tmp_path):
    client, config = metrics_client(tmp_path)
    empty = client.get("/metrics/plot")  # before any run: still a picture, saying so
    assert empty.status_code == 200 and empty.mimetype == "image/png"
    png_size(empty.data)
    history = TrainingHistory(config.state_dir)
    for record in (run_record(4, None), run_record(8, 0.6), run_record(16, 0.8)):
        history.append(PROJECT, record)
    history.append(PROJECT + 1, run_record(6, 0.7))
    everything = client.get("/metrics/plot")
    assert everything.status_code == 200 and everything.mimetype == "image/png"
    assert everything.headers["Cache-Control"] == "no-store"
    assert png_size(everything.data) == (1000, 400)  # DSC and HD95 side by side
    assert everything.data != empty.data
    one = client.get(f"/metrics/plot?project={PROJECT}")
    assert one.status_code == 200 and one.data != everything.data
    png_size(one.data)
    assert client.get("/metrics/plot?project=99").status_code == 404
    assert client.get("/metrics/plot?project=abc").status_code == 400
    # The PNG on disk is the same drawing of that project's runs.
    on_disk = (history.project_dir(PROJECT) / "learning_curve.png").read_bytes()
    assert png_size(on_disk) == (1000, 400)


def test_metrics_plot_needs_the_same_credentials_as_metrics(tmp_path):
    client, _ = metrics_client(tmp_path, auth=True)
    for path in ("/metrics", "/metrics/plot"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=basic(USER, "wrong")).status_code == 401
        assert client.get(path, headers=basic(USER, "pw")).status_code == 200
