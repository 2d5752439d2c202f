"""Masked conv2d on the triton backend (im2col onto the matmul kernels) against the reference."""

import pytest
import torch

from sparse_tickets import ops
from sparse_tickets.functional import masked_conv2d
from tests.conftest import import_triton_or_skip

import_triton_or_skip()  # required where it has wheels: fails there, never skips

# (N, C_in, H, W), (C_out, kH, kW), stride, padding, dilation: odd sizes, one image, one
# channel, stride and dilation, a kernel as large as the input.
CASES = [
    ((1, 1, 5, 5), (1, 1, 1), 1, 0, 1),
    ((2, 3, 7, 6), (5, 3, 3), 1, 1, 1),
    ((1, 2, 9, 11), (3, 3, 2), (2, 1), (1, 0), 1),
    ((2, 2, 8, 8), (4, 3, 3), 2, 2, 2),
    ((1, 3, 4, 4), (2, 4, 4), 1, 0, 1),
]
TOLERANCES = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=1e-2, rtol=1e-2)}


def _conv(backend, monkeypatch, x, weight, mask, bias, grad_y, geometry):
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, backend)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    y = masked_conv2d(leaves[0], leaves[1], mask, leaves[2], **geometry)
    y.backward(grad_y)
    return [y.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("density", [0.0, 0.4, 1.0])
def test_masked_conv2d_matches_the_reference(monkeypatch, kernel_device, dtype, case, density):
    x_shape, (c_out, kh, kw), stride, padding, dilation = case
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=generator).to(kernel_device, dtype)
    weight = torch.randn(c_out, x_shape[1], kh, kw, generator=generator).to(kernel_device, dtype)
    mask = (torch.rand(weight.shape, generator=generator) < density).to(kernel_device)
    bias = torch.randn(c_out, generator=generator).to(kernel_device, dtype)
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    with torch.no_grad():
        out_shape = torch.nn.functional.conv2d(x.float(), weight.float(), None, **geometry).shape
    grad_y = torch.randn(out_shape, generator=generator).to(kernel_device, dtype)
    ours = _conv("triton", monkeypatch, x, weight, mask, bias, grad_y, geometry)
    reference = _conv("reference", monkeypatch, x, weight, mask, bias, grad_y, geometry)
    for got, expected in zip(ours, reference):
        torch.testing.assert_close(got, expected, **TOLERANCES[dtype])
    assert (ours[2][~mask] == 0).all()  # the weight gradient is exactly zero where pruned


def test_grouped_convolution_is_left_to_the_reference(monkeypatch, kernel_device):
    x = torch.randn(1, 4, 5, 5, device=kernel_device)
    weight = torch.randn(2, 2, 3, 3, device=kernel_device)
    mask = torch.ones(weight.shape, dtype=torch.bool, device=kernel_device)
    reasons = ops.get("triton").not_supported_reasons("masked_conv2d", [x, weight, mask])
    assert reasons == ["grouped convolution (groups > 1) is not served; im2col covers groups == 1"]
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "triton")
    with pytest.raises(ops.BackendError, match="grouped convolution"):
        masked_conv2d(x, weight, mask, groups=2)
