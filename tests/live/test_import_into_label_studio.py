"""``sugfw-import-volumes`` into a real Label Studio: slices, metadata and batches as imported,
read back by the backend's own fetcher; a refused import reports its slices and leaves nothing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.labelstudio.import_command import main
from backend.labelstudio.import_volumes import window_volume
from tests.backend.test_import_volumes import ZOOMS, ramp, save_volume

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_import_into_a_real_label_studio(label_studio, tmp_path, monkeypatch):
    import httpx
    from label_studio_sdk import LabelStudio

    from backend.labelstudio.connection import label_studio_auth
    from backend.labelstudio.images import ImageFetcher

    data = tmp_path / "Task02_Heart"
    (data / "imagesTr").mkdir(parents=True)
    save_volume(data / "imagesTr" / "la_001.nii.gz", ramp())
    save_volume(data / "imagesTr" / "la_002.nii.gz", ramp((20, 14, 7)) * 3.0)
    test_list = tmp_path / "test_cases.txt"
    test_list.write_text("la_002\n")
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = client.projects.create(
        title="import", label_config=(ROOT / "label_config.xml").read_text()
    )

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    # Batches of 3 over 9 slices: three uploads, so batching is exercised too.
    assert (
        main(
            [
                str(data),
                "--project",
                str(project.id),
                "--slice-step",
                "3",
                "--test-cases",
                str(test_list),
                "--batch-size",
                "3",
            ]
        )
        == 0
    )

    tasks = sorted(client.tasks.list(project=project.id, fields="all"), key=lambda task: task.id)
    # la_001: 10 slices → 0, 3, 6, 9; la_002: 7 slices → 0, 3, 6.
    got = [(t.data["case_id"], t.data["slice_index"], t.data["split"]) for t in tasks]
    assert got == [("la_001", i, "train") for i in (0, 3, 6, 9)] + [
        ("la_002", i, "test") for i in (0, 3, 6)
    ]
    for task in tasks:
        assert type(task.data["slice_index"]) is int and "priority" not in task.data
        assert task.data["spacing"] == pytest.approx(list(ZOOMS)) and all(
            type(s) is float for s in task.data["spacing"]
        )
    response = httpx.get(
        label_studio.url + tasks[-1].data["image"],
        headers={"Authorization": f"Token {label_studio.token}"},
    )
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as image:
        # la_002 is 20 × 14 per axial slice: PIL reports (width, height).
        assert (image.format, image.mode, image.size) == ("PNG", "L", (14, 20))
    # The backend's own image fetcher reads back exactly the windowed slice 6 of la_002.
    fetcher = ImageFetcher(
        label_studio.url, label_studio_auth(label_studio.url, label_studio.token)
    )
    try:
        pixels = fetcher.fetch({"id": tasks[-1].id, "data": tasks[-1].data}, "image")
    finally:
        fetcher.close()
    assert np.array_equal(pixels, window_volume(ramp((20, 14, 7)) * 3.0)[..., 6].astype(np.float32))


@pytest.mark.slow
def test_a_refused_import_reports_the_slices_and_leaves_nothing_behind(
    label_studio, tmp_path, capsys
):
    from label_studio_sdk import LabelStudio

    save_volume(tmp_path / "la_001.nii.gz", ramp())
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    # This interface reads $img, so tasks carrying only "image" are refused by the server.
    config = (ROOT / "label_config.xml").read_text().replace('value="$image"', 'value="$img"')
    project = client.projects.create(title="refused", label_config=config)
    status = main(
        [
            str(tmp_path),
            "--project",
            str(project.id),
            "--slice-step",
            "5",
            "--url",
            label_studio.url,
            "--api-key",
            label_studio.token,
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "2 slice(s) were not imported" in err and "la_001: slices 0, 5" in err
    assert label_studio.token not in err
    assert (
        list(client.tasks.list(project=project.id)) == []
        and client.files.list(id=project.id, all_=True) == []
    )
