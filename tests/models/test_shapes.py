import numpy as np
import pytest
import torch

from sparse_tickets.models.shapes import (
    as_input_shape,
    check_dropout,
    check_num_classes,
    check_poolable,
    pooled_side,
)


@pytest.mark.parametrize(
    "shape", [(3, 32, 32), [3, 32, 32], (np.int64(3), 32, 32), torch.Size([3, 32, 32])]
)
def test_integer_sequences_become_a_tuple_of_ints(shape):
    result = as_input_shape("m", shape)
    assert result == (3, 32, 32) and all(type(dim) is int for dim in result)


@pytest.mark.parametrize(
    "shape",
    [
        (3, 32),
        (1, 3, 32, 32),
        (3, 0, 32),
        (3, -1, 32),
        (3, 32.0, 32),
        (False, 32, 32),
        32,
        None,
        "abc",
    ],
)
def test_anything_else_is_refused_naming_the_model(shape):
    with pytest.raises(
        ValueError,
        match=r"^m cannot take input_shape .*; expected \(channels, "
        r"height, width\) as three positive ints$",
    ):
        as_input_shape("m", shape)


@pytest.mark.parametrize(
    "side, halvings, left", [(32, 0, 32), (32, 5, 1), (28, 3, 3), (7, 1, 3), (7, 3, 0)]
)
def test_pooled_side_floors_at_each_halving(side, halvings, left):
    assert pooled_side(side, halvings) == left


def test_check_poolable_gives_what_is_left_or_says_what_is_needed():
    assert check_poolable("m", (3, 28, 40), 3) == (3, 5)
    with pytest.raises(
        ValueError,
        match=r"^m cannot take input_shape \(3, 28, 7\): its 3 2x2 "
        r"poolings leave 3x0; it needs height and width of at "
        r"least 8$",
    ):
        check_poolable("m", (3, 28, 7), 3)


def test_num_classes_and_dropout_checks_pass_good_values_through():
    assert check_num_classes("m", np.int32(10)) == 10
    assert check_dropout("m", 0) == 0.0 and check_dropout("m", 0.5) == 0.5
    with pytest.raises(ValueError, match="num_classes=True"):
        check_num_classes("m", True)
