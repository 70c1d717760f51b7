"""The labelling page in a real browser: draw a smart box, get the model's brush mask back.

Real Label Studio (the ``label_studio`` fixture), the backend in this process with LiteMedSAM,
headless Chromium from the distribution's packages driven by Playwright (``scripts/setup.sh``
installs both; the test skips without them). A user signs up, opens the task, turns on
Auto-Annotation, selects the smart box tool and drags a box around the structure; Label Studio posts
the box to the backend's /predict as ``context``, and the brush region that comes back must show in
the page's region list and cover the structure.

The slice is a real LA2018 slice when the data is there (its screenshot stays in the test's tmp
dir: LA2018 images are never committed), else a synthetic phantom. ``SUGFW_BROWSER_SLICE=phantom``
forces the phantom, and with ``SUGFW_SCREENSHOT=<path>`` the phantom's screenshot is written there
too (how ``docs/labelstudio-box-to-mask.png`` is made).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from werkzeug.serving import make_server

from backend.config import BackendConfig
from backend.jobs.queue import JobQueue
from backend.jobs.slice_scorer import SliceScorer
from backend.labelstudio.brush import result_to_mask
from backend.model import SugfwModel
from backend.server.app import create_app
from sugfw.intensity import window_to_uint8

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LA2018 = Path(os.environ.get("SUGFW_LA2018") or REPO.parent / "shared" / "data" / "la2018")
PAGE_TIMEOUT_MS = 90_000
PREDICT_TIMEOUT_MS = 120_000  # the first box on a slice runs the image encoder (seconds on a CPU)
BOX_MARGIN = 5
MIN_DICE = 0.7


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH (scripts/setup.sh installs it with apt-get as root)")
    return path


@dataclass(frozen=True)
class Slice:
    pixels: np.ndarray
    """uint8 (H, W), as uploaded."""
    structure: np.ndarray
    """bool (H, W): what a box around it should segment."""
    source: str


def phantom_slice() -> Slice:
    """A bright disk on a noisy, shaded background."""
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[:160, :200]
    disk = (rows - 70) ** 2 + (cols - 90) ** 2 <= 30**2
    image = 40 + 0.3 * cols + 12 * rng.standard_normal(disk.shape) + 150 * disk
    return Slice(np.clip(image, 0, 255).astype(np.uint8), disk, "phantom")


def la2018_slice() -> Slice | None:
    if os.environ.get("SUGFW_BROWSER_SLICE") == "phantom" or not (LA2018 / "imagesTr").is_dir():
        return None
    from sugfw.experiment.dataset import find_case_files, load_case

    case = load_case(find_case_files(LA2018)[0])
    z = int((case.label > 0).sum(axis=(0, 1)).argmax())  # the slice with the most atrium
    pixels = window_to_uint8(case.image[..., z], (0.5, 99.5))
    return Slice(pixels, case.label[..., z] > 0, f"LA2018 {case.case_id} slice {z}")


class RecordingModel(SugfwModel):
    """The backend's model, keeping the ``context`` of every /predict."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.contexts: list[object] = []

    def predict(self, tasks, context=None, **kwargs):
        self.contexts.append(context)
        return super().predict(tasks, context=context, **kwargs)


@pytest.fixture
def interactive_backend(label_studio, tmp_path, one_torch_thread):
    config = BackendConfig(
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        model="litemedsam",
        device="cpu",
        k=1,
        state_dir=tmp_path / "backend-state",
    )
    model = RecordingModel(config, scorer=SliceScorer(config))
    # Worker not started: the score job /setup queues would only compete with the box for the CPU.
    app = create_app(config, model, JobQueue(config.state_dir))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="backend-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", model
    finally:
        server.shutdown()
        model.close()


def bounding_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel edges of ``mask`` widened by ``margin``, inside the image."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return (
        max(int(cols.min()) - margin, 0),
        max(int(rows.min()) - margin, 0),
        min(int(cols.max()) + 1 + margin, width),
        min(int(rows.max()) + 1 + margin, height),
    )


def test_box_drawn_on_the_labelling_page_comes_back_as_a_brush_mask(
    label_studio, interactive_backend, tmp_path
):
    executable = chromium_path()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)"
    )
    from label_studio_sdk.client import LabelStudio

    backend_url, model = interactive_backend
    slice_ = la2018_slice() or phantom_slice()
    height, width = slice_.pixels.shape
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = ls.projects.create(
        title="box to mask", label_config=(REPO / "label_config.xml").read_text()
    )
    # No prefilled pre-annotation: the only brush region on the page is the box's answer.
    ls.projects.update(id=project.id, show_collab_predictions=False)
    buffer = io.BytesIO()
    Image.fromarray(slice_.pixels).save(buffer, format="PNG")
    answer = httpx.post(
        f"{label_studio.url}/api/projects/{project.id}/import",
        params={"return_task_ids": "true"},
        files={"file0": ("slice.png", buffer.getvalue(), "image/png")},
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=60.0,
    )
    assert answer.status_code == 201, answer.text
    (task_id,) = answer.json()["task_ids"]
    ls.ml.create(project=project.id, url=backend_url, title="sugfw", is_interactive=True)

    x0, y0, x1, y1 = bounding_box(slice_.structure, BOX_MARGIN)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],  # root in a container
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            # A new user of the organisation (sign-up is open): the admin's password stays unknown.
            page.goto(f"{label_studio.url}/user/signup/")
            page.fill("input[name=email]", f"annotator-{secrets.token_hex(4)}@sugfw.test")
            page.fill("input[name=password]", secrets.token_urlsafe(12))
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/user/" not in url)
            page.goto(f"{label_studio.url}/projects/{project.id}/data?task={task_id}")
            stage = page.locator(".konvajs-content").first
            stage.wait_for(state="visible")
            page.get_by_text("Auto-Annotation").click()
            page.get_by_text("Auto-Accept Suggestions").click()  # the answer joins the annotation
            select_smart_box_tool(page)
            page.locator(".lsf-label").last.click()  # the box control's label (last in the config)
            regions = page.locator(".lsf-outliner-item")
            before = regions.count()

            area = stage.bounding_box()
            assert area is not None
            # The image is fitted into the stage keeping its aspect ratio, at the top left.
            scale = min(area["width"] / width, area["height"] / height)
            start = (area["x"] + x0 * scale, area["y"] + y0 * scale)
            end = (area["x"] + x1 * scale, area["y"] + y1 * scale)
            with page.expect_response(
                lambda r: "/interactive-annotating" in r.url, timeout=PREDICT_TIMEOUT_MS
            ) as response_info:
                page.mouse.move(*start)
                page.mouse.down()
                page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
                page.mouse.move(*end, steps=5)
                page.mouse.up()
            response = response_info.value
            assert response.status == 200, response.text()
            sync_api.expect(regions).to_have_count(before + 1, timeout=30_000)
            shot = tmp_path / "labelstudio-box-to-mask.png"
            page.screenshot(path=str(shot))
            target = os.environ.get("SUGFW_SCREENSHOT")
            if target and slice_.source == "phantom":
                shutil.copyfile(shot, target)
            data = response.json().get("data") or {}
        finally:
            browser.close()

    # Label Studio sent the drawn box to /predict as context...
    contexts = [c for c in model.contexts if isinstance(c, dict) and c.get("result")]
    assert contexts, f"no /predict with a context reached the backend: {model.contexts}"
    (drawn,) = contexts[-1]["result"]
    assert drawn["type"] == "rectanglelabels" and drawn["from_name"] == "box"
    value = drawn["value"]
    # Where the drag lands depends on the page's layout to a few screen pixels.
    for key, expected in (
        ("x", x0 / width),
        ("y", y0 / height),
        ("width", (x1 - x0) / width),
        ("height", (y1 - y0) / height),
    ):
        assert value[key] == pytest.approx(100 * expected, abs=3.0), (key, value)
    # ...and the page got one brush region covering the structure, inside the box.
    (item,) = data["result"]
    assert (item["type"], item["from_name"]) == ("brushlabels", "label")
    assert item["value"]["brushlabels"] == ["left_atrium"]
    mask = result_to_mask(item)
    assert mask.shape == slice_.structure.shape
    truth = slice_.structure
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > MIN_DICE, f"{slice_.source}: Dice {dice:.3f} of the box's mask"
    # Inside the box Label Studio sent (its pixel edges), give or take two pixels.
    left, top = value["x"] * width / 100, value["y"] * height / 100
    right, bottom = left + value["width"] * width / 100, top + value["height"] * height / 100
    inside = np.zeros_like(mask)
    inside[max(int(top) - 2, 0) : int(bottom) + 3, max(int(left) - 2, 0) : int(right) + 3] = True
    assert (mask & ~inside).sum() <= 0.02 * mask.sum(), "the mask leaks out of the drawn box"


def select_smart_box_tool(page) -> None:
    """The smart tools share one toolbar button; each click moves to the next smart tool."""
    group = page.locator("button.lsf-tool_smart:not([aria-label])")
    group.wait_for(state="visible")
    state = (
        "() => document.querySelector('button.lsf-tool_smart[aria-label=rectangle-tool]')"
        "?.className || ''"
    )
    for _ in range(6):
        if "lsf-tool_active" in page.evaluate(state):
            return
        group.click()
        page.wait_for_timeout(300)
    raise AssertionError("the smart rectangle tool could not be selected")
