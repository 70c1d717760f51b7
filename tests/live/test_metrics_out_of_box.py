"""Metrics out of the box, against a real Label Studio: the main job's own import path holds a
labelled volume out as the test set, and the first training run reports DSC and HD95 on it.

The project and the backend's test set are made by ``backend.local.launch`` (the functions its
``main`` calls); the backend runs in this process with the environment the main job gives it. The
webhook Label Studio would send after the annotations is posted to the app directly. Four tiny
phantom volumes (three imported, one held out), a few SGD iterations: a minute or two on a loaded
CPU once Label Studio is up.
"""

from __future__ import annotations

import httpx
import nibabel as nib
import numpy as np
import pytest

from backend.config import BackendConfig
from backend.jobs.connected import ConnectedProjects
from backend.jobs.evaluation import evaluate
from backend.jobs.queue import JobQueue
from backend.jobs.splits import volume_test_cases
from backend.jobs.storage import PredictionStore
from backend.jobs.training_history import TrainingHistory
from backend.jobs.training_job import TrainJob
from backend.labelstudio.brush import mask_to_result, parse_label_config
from backend.labelstudio.connection import connect
from backend.local import launch
from backend.model import SugfwModel
from backend.server.app import create_app
from sugfw.data import load_volume
from sugfw.segmentation import load_trained_unet
from tests.live.test_integration_labelstudio import REPO, auth, wait_for_jobs_idle
from tests.live.test_launch import DEPTH, phantom

pytestmark = pytest.mark.slow

N_CASES = 4
"""case_0 .. case_3; the launch holds the last labelled one out."""


@pytest.fixture(scope="module")
def msd_folder(tmp_path_factory):
    """An MSD-layout folder: imagesTr/ and labelsTr/ of N_CASES phantom volumes."""
    root = tmp_path_factory.mktemp("msd")
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir()
    for seed in range(N_CASES):
        image = phantom(seed)
        label = (image > 300).astype(np.uint8)  # the ellipsoid: 400 above a noise of σ = 20
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{seed}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{seed}.nii.gz")
    return root


def test_the_first_training_run_reports_dsc_and_hd95_on_the_held_out_volume(
    label_studio, msd_folder, tmp_path, monkeypatch, one_torch_thread
):
    monkeypatch.delenv(launch.TEST_DATA_ENV, raising=False)
    monkeypatch.setattr(launch, "PROJECT_TITLE", "SUGFW metrics out of the box")
    workdir = tmp_path / "launch"
    workdir.mkdir()
    args = launch.parse_args(
        [str(msd_folder), "--workdir", str(workdir), "--slice-step", "1", "--test-volumes", "1"]
    )
    connection = connect(label_studio.url, label_studio.token)
    project_id, test_data = launch.ensure_project_and_test_data(connection, args)
    assert test_data == workdir / launch.TEST_DATA_DIR
    assert sorted(p.name for p in (test_data / "imagesTr").iterdir()) == ["case_3.nii.gz"]

    tasks = list(connection.sdk.tasks.list(project=project_id))
    # Three volumes imported, slice by slice; the held-out one never became a task.
    assert sorted((t.data["case_id"], t.data["slice_index"]) for t in tasks) == [
        (f"case_{seed}", z) for seed in range(N_CASES - 1) for z in range(DEPTH)
    ]

    env = launch.backend_environment(label_studio.url, label_studio.token, test_data)
    config = BackendConfig.from_env(env).replace(
        state_dir=tmp_path / "backend",
        device="cpu",
        train_crop=64,
        train_batch_size=2,
        train_epochs=3,
        val_every=2,
        debounce_s=0.2,
        metrics_detail=True,  # the checks below read the test case's id from /metrics
    )
    assert config.test_data == test_data  # what the main job's backend reads
    jobs = JobQueue(
        config.state_dir,
        {"train": TrainJob(config, PredictionStore(config.state_dir / "predictions"))},
        debounce_s=config.debounce_s,
    )
    client = create_app(config, SugfwModel(config), jobs=jobs).test_client()
    jobs.start()
    try:
        # The annotators' work: every imported slice, drawn as its label map.
        control = parse_label_config((REPO / "label_config.xml").read_text())
        labels = {
            f"case_{seed}": load_volume(msd_folder / "labelsTr" / f"case_{seed}.nii.gz")[0]
            for seed in range(N_CASES - 1)
        }
        with httpx.Client(
            base_url=label_studio.url, headers=auth(label_studio), timeout=30.0
        ) as ls:
            for task in tasks:
                mask = labels[task.data["case_id"]][..., task.data["slice_index"]] > 0
                result = mask_to_result(mask, control) if mask.any() else []
                answer = ls.post(
                    f"/api/tasks/{task.id}/annotations/", json={"result": result, "task": task.id}
                )
                assert answer.status_code == 201, answer.text
        ConnectedProjects(config.state_dir).add(project_id)  # as Label Studio's /setup does
        hook = client.post(
            "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": project_id}}
        )
        assert hook.get_json()["job"] == "train"
        wait_for_jobs_idle(jobs, quiet_s=1.0)
        assert jobs.snapshot()["last_error"] is None
    finally:
        jobs.stop()

    body = client.get("/metrics").get_json()
    (record,) = body["training"][str(project_id)]
    assert record["note"] is None and record["test_set"] == ["volumes"]
    (case,) = record["cases"]
    assert (case["case_id"], case["source"], case["slices"], case["hd95_unit"]) == (
        "case_3",
        "volumes",
        DEPTH,
        "mm",
    )
    summary = record["summary"]
    assert summary["cases"] == 1 and 0.0 <= summary["dice_mean"] <= 1.0
    assert np.isfinite(summary["hd95_mean"]) and summary["hd95_mean"] >= 0.0
    # Three annotated cases: one held out for validation, the other two trained on.
    assert record["annotations"] == 3 * DEPTH
    assert (record["train_cases"], record["train_slices"]) == (2, 2 * DEPTH)
    assert record["validation"]["source"] == "held_out"
    assert (record["validation"]["cases"], record["validation"]["slices"]) == (1, DEPTH)
    assert record["iterations_planned"] == 3 * (2 * DEPTH // 2)  # 3 epochs of 8 slices, batch 2

    # The figures are those of the kept checkpoint on the held-out volume.
    checkpoint = TrainingHistory(config.state_dir).project_dir(project_id) / "run-1" / "best.pt"
    (expected,) = evaluate(load_trained_unet(checkpoint), volume_test_cases(test_data), "cpu")
    assert case["dice"] == pytest.approx(expected.dice, abs=1e-9)
    assert case["hd95"] == pytest.approx(expected.hd95, abs=1e-9)

    plot = client.get(f"/metrics/plot?project={project_id}")
    assert plot.status_code == 200 and plot.mimetype == "image/png"
    assert plot.data[:8] == b"\x89PNG\r\n\x1a\n"
