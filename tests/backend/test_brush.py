"""Brush masks and the labelling config: the repository's config, exact RLE and polygon round
trips, and configs, labels and masks that are refused."""

from __future__ import annotations

import numpy as np
import pytest

from backend.labelstudio.annotations import annotation_label_map
from backend.labelstudio.brush import (
    LabelConfigError,
    mask_to_result,
    parse_label_config,
    result_to_mask,
)
from sugfw.errors import InvalidInputError
from tests.fakes import LABEL_CONFIG


def described(control) -> tuple:
    """What a parsed control says: from, to, result type, image key, labels."""
    return (
        control.from_name,
        control.to_name,
        control.result_type,
        control.image_key,
        control.labels,
    )


def test_repository_label_config_gives_the_brush_control():
    control = parse_label_config(LABEL_CONFIG)
    assert described(control) == ("label", "image", "brushlabels", "image", ("left_atrium",))


def test_brush_round_trip_is_exact():
    control = parse_label_config(LABEL_CONFIG)
    rng = np.random.default_rng(0)
    mask = np.zeros((37, 53), dtype=bool)
    mask[5:20, 10:40] = True
    mask |= rng.random(mask.shape) < 0.05  # isolated pixels: runs of length one in the RLE
    (item,) = mask_to_result(mask, control)
    assert {
        key: item[key]
        for key in (
            "from_name",
            "to_name",
            "type",
            "original_width",
            "original_height",
            "image_rotation",
        )
    } == {
        "from_name": "label",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": 53,
        "original_height": 37,
        "image_rotation": 0,
    }
    assert item["value"]["format"] == "rle" and item["value"]["brushlabels"] == ["left_atrium"]
    np.testing.assert_array_equal(result_to_mask(item), mask)
    from label_studio_sdk.converter.brush import decode_rle

    # Painted pixels are fully opaque (255), not 1/255 (nearly invisible in the editor).
    alpha = decode_rle(item["value"]["rle"]).reshape(37, 53, 4)[..., 3]
    assert set(np.unique(alpha[mask])) == {255}


def test_annotation_union_ignores_other_controls():
    control = parse_label_config(LABEL_CONFIG)
    top, bottom = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    top[1:3, 2:6], bottom[6:9, 4:10] = True, True
    other = {**mask_to_result(np.ones((10, 12), bool), control)[0], "from_name": "other"}
    items = mask_to_result(top, control) + mask_to_result(bottom, control) + [other]
    np.testing.assert_array_equal(annotation_label_map(items, control, 10, 12) > 0, top | bottom)


def test_polygon_config_and_rectangle_round_trip():
    config = (
        '<View><Image name="im" value="$pic"/><PolygonLabels name="poly" toName="im">'
        '<Label value="a"/><Label value="b"/></PolygonLabels></View>'
    )
    control = parse_label_config(config)
    assert described(control) == ("poly", "im", "polygonlabels", "pic", ("a", "b"))
    mask = np.zeros((20, 40), dtype=bool)
    mask[4:10, 8:30] = True
    (item,) = mask_to_result(mask, control, label="b")
    # Corners of the rectangle's pixel centres in percent: x = 8/40·100 = 20, 29/40·100 = 72.5; y =
    # 4/20·100 = 20, 9/20·100 = 45.
    assert sorted(map(tuple, item["value"]["points"])) == [
        (20.0, 20.0),
        (20.0, 45.0),
        (72.5, 20.0),
        (72.5, 45.0),
    ]
    assert item["value"]["polygonlabels"] == ["b"]
    np.testing.assert_array_equal(result_to_mask(item), mask)


@pytest.mark.parametrize(
    "config,message",
    [
        (
            '<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice '
            'value="a"/></Choices></View>',
            "no BrushLabels or PolygonLabels tag \\(control tags found: Choices\\)",
        ),
        ("not xml at all", "not valid XML"),
        (
            '<View><Text name="t" value="$text"/><BrushLabels name="b" toName="t"><Label '
            'value="a"/></BrushLabels></View>',
            "which is not an <Image> tag",
        ),
    ],
)
def test_unusable_label_config_is_a_label_config_error(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(config)


def test_unknown_label_and_non_bool_mask_are_refused():
    control = parse_label_config(LABEL_CONFIG)
    with pytest.raises(LabelConfigError, match="label 'liver' is not one of 'label'"):
        mask_to_result(np.zeros((8, 8), bool), control, label="liver")
    with pytest.raises(InvalidInputError, match="expected a 2-D bool array"):
        mask_to_result(np.zeros((8, 8), np.uint8), control)


def test_truncated_rle_is_refused():
    control = parse_label_config(LABEL_CONFIG)
    (item,) = mask_to_result(np.ones((8, 8), bool), control)
    item["original_height"] = 9
    with pytest.raises(InvalidInputError, match="decodes to 256 values; expected 9×8×4 = 288"):
        result_to_mask(item)
