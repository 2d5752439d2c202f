"""The reference's exact, vectorised zeroing of pruned entries."""

import pytest
import torch

from sparse_tickets.ops.reference import masking
from sparse_tickets.ops.reference.masking import (
    _keep_bits,
    apply_mask,
    is_full,
    mask_facts,
    zero_pruned_,
)

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_pruned_entries_become_positive_zero_whatever_they_held(dtype):
    values = torch.tensor(
        [float("nan"), float("inf"), -float("inf"), -1.5, -0.0, 2.0, 3.0], dtype=dtype
    )
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


def test_mask_facts_follow_in_place_changes_of_the_mask():
    mask = torch.ones(5, 3, dtype=torch.bool)
    assert is_full(mask)
    bits = _keep_bits(mask, torch.int32)
    assert _keep_bits(mask, torch.int32) is bits  # cached while the mask is unchanged
    mask[2, 1] = False  # an in-place change bumps the version
    assert not is_full(mask)
    assert _keep_bits(mask, torch.int32) is not bits
    weight = torch.randn(5, 3)
    assert apply_mask(weight, mask)[2, 1].item() == 0.0
    mask.fill_(True)
    assert is_full(mask)
    assert torch.equal(apply_mask(weight, mask), weight)


def test_mask_facts_are_per_tensor_and_die_with_it():
    full, partial = torch.ones(4, dtype=torch.bool), torch.tensor([True, False, True, True])
    assert is_full(full) and not is_full(partial)
    before = len(masking._FACTS)
    del full, partial
    assert len(masking._FACTS) <= before - 2


def test_meta_and_inference_masks_are_never_cached():
    assert mask_facts(torch.ones(3, dtype=torch.bool, device="meta")) is None
    with torch.inference_mode():
        mask = torch.ones(3, dtype=torch.bool)
    assert mask_facts(mask) is None and not is_full(mask)
