"""The reference's exact, vectorised zeroing of pruned entries."""

import pytest
import torch

from sparse_tickets.ops.reference.masking import apply_mask, zero_pruned_

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_pruned_entries_become_positive_zero_whatever_they_held(dtype):
    values = torch.tensor([float("nan"), float("inf"), -float("inf"), -1.5, -0.0, 2.0, 3.0],
                          dtype=dtype)
    mask = torch.tensor([False, False, False, False, False, True, False])
    expected = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0], dtype=dtype)
    for result in (apply_mask(values, mask), zero_pruned_(values.clone(), mask)):
        assert torch.equal(result, expected)
        assert not torch.signbit(result).any()  # +0.0, not -0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_kept_entries_are_untouched_bit_for_bit(dtype):
    values = torch.randn(37, 11, dtype=torch.float64).to(dtype)
    values[0, 0], values[1, 1] = float("nan"), -float("inf")
    mask = torch.rand(values.shape) < 0.6
    mask[0, 0] = mask[1, 1] = True
    result = apply_mask(values.t(), mask.t())  # non-contiguous views too
    kept = mask.t()
    assert torch.equal(result[kept].isnan(), values.t()[kept].isnan())
    finite = kept & ~values.t().isnan()
    assert torch.equal(result[finite], values.t()[finite])
    assert apply_mask(values, mask).dtype == dtype


def test_in_place_zeroing_keeps_the_tensor():
    values = torch.randn(5)
    mask = torch.tensor([True, False, True, False, True])
    assert zero_pruned_(values, mask) is values
    assert (values[~mask] == 0).all()
