import pytest
import torch

from sparse_tickets.pruning import kept_count, pruned_count
from sparse_tickets.pruning.select import remove_lowest
from tests.pruning.helpers import half_up

CASES = [
    (fraction, n)
    for fraction in ("0", "0.1", "0.2", "0.25", "0.3", "0.5", "0.7", "0.9")
    for n in (0, 1, 2, 3, 5, 7, 15, 30, 101)
]


@pytest.mark.parametrize("fraction, n", CASES)
def test_pruned_count_rounds_to_nearest_with_halves_up(fraction, n):
    assert pruned_count(float(fraction), n) == half_up(fraction, n)


@pytest.mark.parametrize(
    "density, n", [(d, n) for d in ("0.1", "0.25", "0.5", "0.7", "1") for n in (1, 2, 3, 7, 15, 30)]
)
def test_kept_count_rounds_to_nearest_with_halves_up(density, n):
    assert kept_count(float(density), n) == half_up(density, n)


def test_exact_halves_round_up_despite_binary_representation():
    # 0.7 * 15 is 10.5 in decimal; in binary 0.7 is slightly below 0.7.
    assert pruned_count(0.7, 15) == 11
    assert pruned_count(0.5, 7) == 4
    assert pruned_count(0.05, 30) == 2
    assert kept_count(0.5, 3) == 2


def test_remove_lowest_removes_exactly_the_lowest_remaining():
    scores = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    mask = torch.tensor([True, False, True, True, True])
    (new,) = remove_lowest([scores], [mask], 2)
    # 1.0 is already pruned, so 2.0 and 3.0 go.
    assert new.tolist() == [True, False, True, False, False]


def test_remove_lowest_pools_layers_and_breaks_ties_by_layer_then_position():
    first = torch.ones(2, 3)
    second = torch.ones(4)
    masks = [torch.ones(2, 3, dtype=torch.bool), torch.ones(4, dtype=torch.bool)]
    new_first, new_second = remove_lowest([first, second], masks, 7)
    assert not new_first.any()
    assert new_second.tolist() == [False, True, True, True]


def test_remove_lowest_of_nothing_keeps_copies():
    mask = torch.tensor([True, False])
    (new,) = remove_lowest([torch.zeros(2)], [mask], 0)
    assert torch.equal(new, mask) and new is not mask


def test_remove_lowest_refuses_more_than_remain():
    with pytest.raises(ValueError, match="cannot remove 3 of 2 remaining"):
        remove_lowest([torch.zeros(2)], [torch.ones(2, dtype=torch.bool)], 3)
