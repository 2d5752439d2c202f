"""The rule that picks a compact conv2d's vectorisation, and its record on the index."""

import pytest
import torch

from sparse_tickets.formats import CompactIndex, conv_plan

GEOMETRY = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))


def _choose(x_shape, dtype=torch.float32, device_type="cpu"):
    return conv_plan.choose_variant(x_shape, dtype=dtype, device_type=device_type, **GEOMETRY)


def test_the_rule_weighs_the_lanes_each_variant_fills():
    # One image: over the batch, one lane of a vector in use; a 32-wide row fills every lane.
    assert _choose((1, 16, 32, 32)) == "width"
    assert _choose((1, 16, 4, 4)) == "width"
    # Batch 60 leaves lanes empty; 32-wide rows fill theirs and are several vectors long.
    assert _choose((60, 64, 32, 32)) == "width"
    # Both fill every lane: rows of two vectors or more go over the width...
    assert _choose((64, 16, 32, 32)) == "width"
    assert _choose((64, 16, 32, 32), torch.float64) == "width"
    # ...rows of one vector or less over the batch.
    lanes = conv_plan.simd_lanes(torch.float32)
    assert _choose((64, 256, lanes, lanes)) == "batch"
    assert _choose((60, 256, 8, 8)) == "batch"
    assert _choose((64, 512, 4, 4)) == "batch"


def test_other_devices_take_im2col():
    assert _choose((64, 16, 32, 32), device_type="cuda") == "im2col"


def test_lanes_follow_the_vector_width():
    assert conv_plan.simd_lanes(torch.float32) == 2 * conv_plan.simd_lanes(torch.float64)
    assert conv_plan.simd_lanes(torch.float32) in (8, 16)


def test_a_choice_is_made_once_per_input_shape_and_recorded():
    index = CompactIndex.from_mask(torch.ones(4, 3, 3, 3, dtype=torch.bool))
    plan = index.conv_plan
    args = (GEOMETRY["kernel"], (1, 1), (1, 1), (1, 1), 1, torch.float32, "cpu")
    first = plan.variant((1, 3, 32, 32), *args)
    plan.choices[next(iter(plan.choices))] = "batch"  # a recorded choice is not re-derived
    assert first == "width" and plan.variant((1, 3, 32, 32), *args) == "batch"
    assert plan.variant((64, 3, 4, 4), *args) == "batch" and len(plan.choices) == 2
    # A new index (a new mask) starts a new plan; plans never make two indexes unequal.
    assert CompactIndex.from_mask(torch.ones(4, 3, 3, 3, dtype=torch.bool)).conv_plan.choices == {}


def test_unknown_variants_are_refused():
    with pytest.raises(ValueError, match="conv variant 'fast' is not one of"):
        conv_plan.check_variant("fast")
