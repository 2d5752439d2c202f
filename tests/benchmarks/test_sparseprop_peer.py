"""The sparseprop provider of the benchmark suites: every SparseProp variant is checked against
the dense product before a row times the fastest correct one. Runs where SparseProp is
installed; skipped, with the reason, elsewhere."""

import pytest
import torch

from benchmarks import providers, shapes, sparseprop_peer

pytestmark = pytest.mark.skipif(
    sparseprop_peer.unavailable_reason() is not None,
    reason=str(sparseprop_peer.unavailable_reason()),
)


def _conv(batch, stride=1, sparsity=0.9):
    shape = shapes.ConvShape("t", batch, 5, 7, 9, stride=stride)
    return providers.conv_case(shape, sparsity, "cpu", torch.float32, requires_grad=True)


def test_the_batch_variant_is_caught_wrong_at_batch_60_and_never_timed():
    step, info = providers.conv_row(providers.SPARSEPROP, _conv(60), backward=True)
    assert info["variant"] == "output_width"
    assert info["variants_correct"] == ["output_width"]
    assert set(info["variants_wrong"]) == {"batch"}
    assert info["variants_wrong"]["batch"] > 0.1  # off by O(1), not by rounding
    step()


def test_at_a_batch_multiple_of_8_both_variants_are_correct_and_the_fastest_is_timed():
    _, info = providers.conv_row(providers.SPARSEPROP, _conv(16), backward=False)
    assert sorted(info["variants_correct"]) == ["batch", "output_width"]
    assert info["variants_wrong"] == {}
    assert info["variant"] in info["variants_correct"]


def test_a_case_no_variant_gets_right_is_skipped_with_the_errors():
    with pytest.raises(
        pytest.skip.Exception,
        match=r"no SparseProp variant is correct here "
        r"\(relative error batch .*output_width",
    ):
        providers.conv_row(providers.SPARSEPROP, _conv(3, stride=2), backward=True)


def test_the_timed_step_computes_what_the_dense_product_does():
    case = _conv(16)
    step, info = providers.conv_row(providers.SPARSEPROP, case, backward=True)
    module = sparseprop_peer.conv_module(case.weight, case.stride, case.padding, info["variant"])
    error = sparseprop_peer.variant_error(
        module,
        case.x,
        case.weight,
        case.mask,
        case.grad_y,
        lambda x, w: torch.nn.functional.conv2d(x, w, stride=case.stride, padding=case.padding),
    )
    assert error <= sparseprop_peer.TOLERANCE


def test_the_linear_row_checks_its_kernel_and_trains_the_kept_values():
    case = providers.linear_case(60, 37, 11, 0.9, "cpu", torch.float32, True)
    step, info = providers.linear_row(providers.SPARSEPROP, case, backward=True)
    assert info == {"variant": "csr", "variants_correct": ["csr"], "variants_wrong": {}}
    step()
    forward, _ = providers.linear_row(providers.SPARSEPROP, case, backward=False)
    assert forward().shape == (60, 11) and not forward().requires_grad


def test_a_wrong_kernel_is_reported_as_wrong():
    case = providers.linear_case(8, 16, 4, 0.5, "cpu", torch.float32, True)
    module = sparseprop_peer.linear_module(case.weight)
    assert (
        sparseprop_peer.variant_error(
            module,
            case.x,
            case.weight,
            case.mask,
            case.grad_y,
            lambda x, w: torch.nn.functional.linear(x, 2 * w),
        )
        > 0.1
    )


def test_rows_it_cannot_run_are_skipped_with_the_reason():
    assert sparseprop_peer.skip_reason("cpu", torch.float32) is None
    assert "CPU only" in sparseprop_peer.skip_reason("cuda", torch.float32)
    assert "float32 only, not float64" in sparseprop_peer.skip_reason("cpu", torch.float64)
    assert providers.SPARSEPROP in providers.linear_providers("cpu", torch.float32)
    assert providers.SPARSEPROP in providers.conv_providers("cpu", torch.float32)
    assert not providers.times_sparsity(providers.SPARSEPROP, 0.0, shapes.SPARSITIES)
