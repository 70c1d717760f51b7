"""Separate regions published: each of a record's regions becomes one Label Studio brush region,
decoding to exactly that region, and together to the record's union."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from backend.labelstudio.annotations import annotation_label_map
from backend.labelstudio.brush import result_to_mask
from backend.labelstudio.prefill import region_results
from tests.fakes import CONTROL
from tests.sugfw.test_regions import overlapping_regions, record_with


def test_region_results_decode_to_exactly_the_regions_and_their_or_to_the_union() -> None:
    regions = overlapping_regions()
    record = record_with(regions)
    items = region_results(record, CONTROL)
    assert len(items) == len(regions)
    assert [item["id"] for item in items] == ["sam-1", "sam-2", "sam-3"]
    for item, region in zip(items, regions):
        assert item["type"] == "brushlabels"
        assert item["value"]["brushlabels"] == [CONTROL.labels[0]]
        assert (item["from_name"], item["to_name"]) == (CONTROL.from_name, CONTROL.to_name)
        np.testing.assert_array_equal(result_to_mask(item), region)  # kept as drawn: overlaps too
    np.testing.assert_array_equal(
        annotation_label_map(items, CONTROL, 9, 11) > 0, record.union_mask
    )
    assert region_results(record, CONTROL) == items  # deterministic ids and encodings


def test_region_results_of_empty_and_stand_in_records() -> None:
    empty = record_with(np.zeros((0, 9, 11), bool), kept=0)
    assert region_results(empty, CONTROL) == []  # no invisible empty region
    union = overlapping_regions().any(0)
    (item,) = region_results(SimpleNamespace(union_mask=union), CONTROL)
    np.testing.assert_array_equal(result_to_mask(item), union)
