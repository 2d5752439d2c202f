import pytest
import torch

from sparse_tickets.data import ImageSplit, hold_out_validation, holdout_indices, stratified_indices


def test_holdout_follows_the_documented_rule():
    kept, held_out = holdout_indices(100, 30, seed=0)
    permutation = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    assert held_out.tolist() == sorted(permutation[:30].tolist())
    assert kept.tolist() == sorted(permutation[30:].tolist())


def test_holdout_ignores_the_global_generator():
    torch.manual_seed(1)
    first = holdout_indices(50, 10)
    torch.manual_seed(2)
    torch.rand(7)
    second = holdout_indices(50, 10)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(holdout_indices(50, 10, seed=1)[1], first[1])


@pytest.mark.parametrize("holdout", [-1, 11])
def test_holdout_out_of_range(holdout):
    with pytest.raises(ValueError, match="cannot hold out"):
        holdout_indices(10, holdout)


def test_stratified_counts_are_exact_and_disjoint():
    labels = torch.arange(3).repeat_interleave(torch.tensor([10, 12, 9]))[torch.randperm(31)]
    first, second = stratified_indices(labels, (5, 3))
    assert torch.bincount(labels[first]).tolist() == [5, 5, 5]
    assert torch.bincount(labels[second]).tolist() == [3, 3, 3]
    assert not set(first.tolist()) & set(second.tolist())
    assert first.tolist() == sorted(first.tolist())


def test_stratified_rejects_a_small_class():
    labels = torch.tensor([0, 0, 0, 1])
    with pytest.raises(ValueError, match="class 1 has 1 examples"):
        stratified_indices(labels, (1, 1))


def test_hold_out_validation_partitions_the_split():
    split = ImageSplit(
        torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1),
        torch.zeros(20, dtype=torch.int64),
        [0.0],
        [1.0],
    )
    train, val = hold_out_validation(split, 6)
    rows = train.images.flatten().tolist() + val.images.flatten().tolist()
    assert len(train) == 14 and len(val) == 6 and sorted(rows) == list(range(20))
    with pytest.raises(ValueError, match="must keep at least one"):
        hold_out_validation(split, 20)
    with pytest.raises(TypeError, match="validation_size must be an int"):
        hold_out_validation(split, 2.0)
