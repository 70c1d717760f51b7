"""Interactive box (and point) → mask: context parsing, the embedding cache, real LiteMedSAM on a
real LA2018 slice, and /predict through the Flask app."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.config import BackendConfig
from backend.interactive import brush_label
from backend.jobs.queue import JobQueue
from backend.jobs.slice_scorer import SliceScorer
from backend.labelstudio.brush import (
    LabelConfigError,
    parse_label_config,
    parse_prompt_controls,
    result_to_mask,
)
from backend.labelstudio.images import ImageFetcher
from backend.labelstudio.prompts import context_regions, parse_prompt
from backend.model import SugfwModel
from backend.server.app import create_app
from sugfw.experiment.dataset import find_case_files, load_case
from sugfw.models import build_model
from sugfw.prompting import EmbeddingCache, Prompt, PromptError, PromptSegmenter, bounding_box
from sugfw.scoring import Scorer, ScoringSettings

REPO = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (REPO / "label_config.xml").read_text()
MIN_GT_BOX_DICE = 0.8


def box_region(x, y, width, height, rotation=0.0, label="left_atrium", kind="rectanglelabels"):
    value = {"x": x, "y": y, "width": width, "height": height, "rotation": rotation}
    if label is not None:
        value[kind] = [label]
    return {"from_name": "box", "to_name": "image", "type": kind, "value": value}


def point_region(x, y, positive=True):
    value = {"x": x, "y": y, "keypointlabels": ["left_atrium"]}
    return {"type": "keypointlabels", "is_positive": positive, "value": value}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * int((a & b).sum()) / max(int(a.sum()) + int(b.sum()), 1)


# -- the label config --------------------------------------------------------------------------


def test_label_config_has_a_smart_box_and_keeps_the_brush_as_the_mask_target():
    (box,) = parse_prompt_controls(LABEL_CONFIG)
    assert (box.from_name, box.to_name, box.result_type, box.kind) == (
        "box",
        "image",
        "rectanglelabels",
        "box",
    )
    assert box.smart and box.labels == ("left_atrium",)
    brush = parse_label_config(LABEL_CONFIG)
    assert (brush.from_name, brush.result_type, brush.labels) == (
        "label",
        "brushlabels",
        ("left_atrium",),
    )


def test_keypoint_controls_are_parsed_and_a_plain_rectangle_is_not_smart():
    config = LABEL_CONFIG.replace(
        "</View>",
        '<KeyPointLabels name="pt" toName="image" smartOnly="true"><Label value="a"/>'
        '</KeyPointLabels><Rectangle name="r" toName="image"/></View>',
    )
    controls = {c.from_name: c for c in parse_prompt_controls(config)}
    assert (controls["pt"].kind, controls["pt"].smart, controls["pt"].labels) == (
        "point",
        True,
        ("a",),
    )
    assert (controls["r"].result_type, controls["r"].smart) == ("rectangle", False)


def test_a_config_with_only_a_box_still_fails_the_brush_parser():
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image" '
        'smart="true"><Label value="a"/></RectangleLabels></View>'
    )
    assert len(parse_prompt_controls(config)) == 1
    with pytest.raises(LabelConfigError, match="no BrushLabels or PolygonLabels tag"):
        parse_label_config(config)


# -- context → pixels (hand-computed) ----------------------------------------------------------


def test_box_percent_becomes_first_and_last_pixel_indices():
    # 200 wide, 100 high: x 10 % → 20 px, width 25 % → 50 px (edges 20..70 → pixels 20..69);
    # y 20 % → 20 px, height 50 % → 50 px (edges 20..70 → pixels 20..69).
    prompt = parse_prompt([box_region(10, 20, 25, 50)], height=100, width=200)
    assert prompt.box == pytest.approx((20.0, 20.0, 69.0, 69.0))
    assert prompt.label == "left_atrium" and prompt.points == ()


def test_box_partly_outside_is_clipped_to_the_image():
    # x 90 % + 20 % on 200 px: edges 180..220 → clipped to 180..200 → pixels 180..199.
    prompt = parse_prompt([box_region(90, -10, 20, 30)], height=100, width=200)
    assert prompt.box == pytest.approx((180.0, 0.0, 199.0, 19.0))


def test_rotated_box_prompts_with_its_axis_aligned_bounds():
    # 20 × 20 px at (100, 10), turned 90° clockwise about its top-left corner: x 80..100, y 10..30.
    prompt = parse_prompt([box_region(50, 10, 10, 20, rotation=90)], height=100, width=200)
    assert prompt.box == pytest.approx((80.0, 10.0, 99.0, 29.0), abs=1e-9)


def test_keypoints_become_pixel_centres_with_their_sign():
    # x 50 % of 200 = 100 (edge) → centre index 99.5; y 25 % of 100 = 25 → 24.5.
    prompt = parse_prompt(
        [point_region(50, 25), point_region(0, 100, positive=False)], height=100, width=200
    )
    assert prompt.box is None
    np.testing.assert_allclose(prompt.points, [(99.5, 24.5), (0.0, 99.0)])
    assert prompt.point_labels == (1, 0)
    assert prompt.label == "left_atrium"


def test_last_box_wins_and_other_region_types_are_ignored():
    regions = [
        {"type": "brushlabels", "value": {"rle": [1, 2]}},
        box_region(0, 0, 10, 10, label=None),
        box_region(50, 50, 10, 10, label="other"),
    ]
    prompt = parse_prompt(regions, height=100, width=100)
    assert prompt.box == pytest.approx((50.0, 50.0, 59.0, 59.0))
    assert prompt.label == "other"


@pytest.mark.parametrize(
    "regions,message",
    [
        ([box_region(10, 10, 0, 20)], "has no area"),
        ([box_region(10, 10, 20, -5)], "has no area"),
        ([box_region(120, 10, 20, 20)], "lies outside the image"),
        ([box_region(-40, 10, 20, 20)], "lies outside the image"),
        ([point_region(101, 50)], "keypoint .* lies outside the image"),
        ([{"type": "rectanglelabels"}], "has no 'value' object"),
        ([box_region("10", 10, 20, 20)], "value.x is '10'"),
        ([box_region(math.nan, 10, 20, 20)], "expected a finite number"),
        ([{"type": "brushlabels", "value": {}}], "no rectangle or keypoint region"),
        (["not a region"], "no rectangle or keypoint region"),
        ([], "no rectangle or keypoint region"),
    ],
)
def test_bad_regions_are_prompt_errors(regions, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt(regions, height=100, width=200)


def test_context_without_result_is_not_interactive_and_a_non_list_result_is_refused():
    assert context_regions(None) is None
    assert context_regions({"other": 1}) is None
    assert context_regions({"result": []}) == []
    with pytest.raises(PromptError, match="expected a list"):
        context_regions({"result": {"x": 1}})


def test_brush_label_follows_the_box_when_the_brush_has_it():
    control = parse_label_config(
        LABEL_CONFIG.replace(
            '<Label value="left_atrium" background="#e4572e"/>\n  </BrushLabels>',
            '<Label value="left_atrium"/><Label value="scar"/></BrushLabels>',
        )
    )
    assert control.labels == ("left_atrium", "scar")
    assert brush_label(control, "scar") == "scar"
    assert brush_label(control, "unknown") == "left_atrium"
    assert brush_label(control, None) == "left_atrium"


# -- embedding cache ---------------------------------------------------------------------------


class CountingEncoder:
    """Wraps a model's ``encode`` and counts the calls."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.encode = model.encode
        model.encode = self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.encode(batch)


def test_second_prompt_on_the_same_slice_skips_the_encoder(tiny_sam, textured_slice):
    counter = CountingEncoder(tiny_sam)
    segmenter = PromptSegmenter(tiny_sam, (0.5, 99.5), EmbeddingCache(4))
    image = textured_slice(40, 56, seed=1)
    first = segmenter.mask(image, Prompt((5.0, 5.0, 30.0, 25.0)))
    assert counter.calls == 1 and first.shape == (40, 56) and first.dtype == bool
    # Same pixels in a new array (the cache keys on content), another box, then a point.
    segmenter.mask(image.copy(), Prompt((10.0, 8.0, 40.0, 30.0)))
    segmenter.mask(image.copy(), Prompt(None, ((20.0, 20.0),), (1,)))
    assert counter.calls == 1
    assert (segmenter.cache.hits, segmenter.cache.misses) == (2, 1)
    segmenter.mask(textured_slice(40, 56, seed=2), Prompt((5.0, 5.0, 30.0, 25.0)))
    assert counter.calls == 2


def test_cache_evicts_the_least_recently_used_slice(tiny_sam, textured_slice):
    counter = CountingEncoder(tiny_sam)
    segmenter = PromptSegmenter(tiny_sam, (0.5, 99.5), EmbeddingCache(2))
    a, b, c = (textured_slice(32, 32, seed=s) for s in (3, 4, 5))
    box = Prompt((2.0, 2.0, 20.0, 20.0))
    for image in (a, b, a, c):  # c evicts b (a was used more recently)
        segmenter.mask(image, box)
    assert counter.calls == 3 and len(segmenter.cache) == 2
    segmenter.mask(a, box)
    assert counter.calls == 3
    segmenter.mask(b, box)
    assert counter.calls == 4


def test_same_prompt_gives_the_same_mask_with_and_without_the_cache(tiny_sam, textured_slice):
    image, prompt = textured_slice(48, 40, seed=6), Prompt((4.0, 6.0, 30.0, 40.0))
    cold = PromptSegmenter(tiny_sam, (0.5, 99.5), EmbeddingCache(0))
    warm = PromptSegmenter(tiny_sam, (0.5, 99.5), EmbeddingCache(2))
    warm.mask(image, prompt)
    np.testing.assert_array_equal(cold.mask(image, prompt), warm.mask(image, prompt))


# -- real LiteMedSAM ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litemedsam():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than 2 on this shared 2-core machine
    yield build_model("litemedsam", device="cpu")
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_litemedsam_gt_box_segments_the_left_atrium(litemedsam, la2018_volumes):
    files = find_case_files(la2018_volumes[0].parent.parent)[0]
    case = load_case(files)
    z = int((case.label > 0).sum(axis=(0, 1)).argmax())  # the slice with the most atrium
    image, label = case.image[..., z], case.label[..., z] > 0
    segmenter = PromptSegmenter(
        litemedsam, ScoringSettings(litemedsam.defaults).intensity_percentiles
    )
    mask = segmenter.mask(image, Prompt(bounding_box(label, margin=5)))
    score = dice(mask, label)
    assert score > MIN_GT_BOX_DICE, f"{files.case_id} slice {z}: Dice {score:.3f}"
    # A box away from the atrium does not give the atrium back.
    elsewhere = segmenter.mask(image, Prompt((0.0, 0.0, 15.0, 15.0)))
    assert dice(elsewhere, label) < 0.2


def test_litemedsam_refuses_points_without_a_box(litemedsam):
    segmenter = PromptSegmenter(litemedsam, (0.5, 99.5))
    with pytest.raises(PromptError, match="takes box prompts only"):
        segmenter.mask(np.zeros((32, 32), np.float32), Prompt(None, ((5.0, 5.0),), (1,)))


# -- /predict through the Flask app ------------------------------------------------------------


def disk_slice(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on a noisy, shaded background (uint8) and the disk."""
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[:size, :size]
    disk = (rows - 40) ** 2 + (cols - 56) ** 2 <= 16**2
    image = 40 + 0.3 * cols + 12 * rng.standard_normal((size, size)) + 150 * disk
    return np.clip(image, 0, 255).astype(np.uint8), disk


@pytest.fixture
def interactive_app(tmp_path, litemedsam):
    pixels, disk = disk_slice()
    root = tmp_path / "files"
    root.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    (root / "disk.png").write_bytes(buffer.getvalue())
    config = BackendConfig(state_dir=tmp_path / "state")
    scorer = SliceScorer(config, scorer=Scorer(litemedsam, ScoringSettings(litemedsam.defaults)))
    model = SugfwModel(config, scorer=scorer, fetcher=lambda: ImageFetcher(local_files_root=root))
    jobs = JobQueue(config.state_dir, debounce_s=5.0)  # worker not started
    counter = CountingEncoder(litemedsam)
    try:
        yield create_app(config, model, jobs).test_client(), model, disk, counter
    finally:
        litemedsam.encode = counter.encode


def predict_body(regions, config: str = LABEL_CONFIG) -> dict:
    task = {"id": 11, "data": {"image": "/data/local-files/?d=disk.png"}}
    return {
        "tasks": [task],
        "project": "1.1700000000",
        "label_config": config,
        "params": {"context": {"result": regions}},
    }


@pytest.mark.slow
def test_predict_with_a_box_context_answers_the_mask_inside_the_box(interactive_app):
    client, model, disk, counter = interactive_app
    # The disk spans rows 24..56, columns 40..72 of 96: a box 4 px around it, in percent.
    box = box_region(36 / 96 * 100, 20 / 96 * 100, 41 / 96 * 100, 41 / 96 * 100)
    response = client.post("/predict", json=predict_body([box]))
    assert response.status_code == 200, response.get_json()
    (prediction,) = response.get_json()["results"]
    assert prediction["model_version"] == model.model_version and prediction["score"] is None
    (item,) = prediction["result"]
    assert (item["from_name"], item["to_name"], item["type"]) == ("label", "image", "brushlabels")
    assert item["value"]["brushlabels"] == ["left_atrium"] and item["id"]
    mask = result_to_mask(item)
    assert mask.shape == disk.shape
    inside = np.zeros_like(mask)
    inside[20:61, 36:77] = True
    assert mask.sum() > 0.5 * disk.sum()
    assert (mask & ~inside).sum() <= 0.02 * mask.sum(), "mask leaks out of the box"
    assert dice(mask, disk) > 0.85
    assert model.predictions.get(11) is None  # an interactive answer is never stored
    # A second box on the same slice reuses the embedding.
    smaller = box_region(40 / 96 * 100, 24 / 96 * 100, 33 / 96 * 100, 33 / 96 * 100)
    again = client.post("/predict", json=predict_body([smaller]))
    assert again.status_code == 200 and len(again.get_json()["results"][0]["result"]) == 1
    assert counter.calls == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "context",
    [
        {"result": [box_region(150, 10, 20, 20)]},  # outside the image
        {"result": [box_region(10, 10, 0, 20)]},  # zero area
        {"result": []},
    ],
    ids=["outside", "zero-area", "empty"],
)
def test_unusable_context_gets_an_empty_prediction(interactive_app, context):
    client, model, _, counter = interactive_app
    body = predict_body([])
    body["params"]["context"] = context
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["results"] == [model.empty_prediction()]


@pytest.mark.slow
def test_box_context_with_a_config_without_brush_is_a_400(interactive_app):
    client, _, _, _ = interactive_app
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image" '
        'smart="true"><Label value="left_atrium"/></RectangleLabels></View>'
    )
    response = client.post("/predict", json=predict_body([box_region(30, 30, 20, 20)], config))
    assert response.status_code == 400
    assert "no BrushLabels or PolygonLabels tag" in response.get_json()["error"]


def test_bounding_box_hand_computed():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True  # rows 2-4, cols 3-8
    assert bounding_box(mask) == (3.0, 2.0, 8.0, 4.0)
    assert bounding_box(mask, margin=4) == (0.0, 0.0, 11.0, 8.0)  # clipped to the slice
    with pytest.raises(PromptError, match="empty mask"):
        bounding_box(np.zeros((4, 4), dtype=bool))
