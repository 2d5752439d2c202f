"""The fused Triton optimizer steps against the reference steps, and through the optimizers.

Close, not bitwise: the reference rounds to the storage dtype after every torch op and its CPU
kernels may fuse a multiply-add; the Triton kernels do all of a step in fp32 registers, with
their own contraction into FMAs, and round once at the store. In fp32 that is a few ulps per
step; in fp16 the reference's intermediate roundings dominate, hence the looser table.
"""

import pytest
import torch

from sparse_tickets import MaskedLinear, masked_layers, ops
from sparse_tickets.ops.reference import optim as reference
from sparse_tickets.optim import MaskedAdam, MaskedSGD
from tests.conftest import import_triton_or_skip

import_triton_or_skip()  # required where it has wheels: fails there, never skips
from sparse_tickets.kernels.triton import masked_optim as fused  # noqa: E402  (after the guard)

# Awkward against the interpreter's 128-element chunk and the GPU's 1024: one element, the
# chunk itself and its neighbours, primes, a multi-dimensional weight, one past the GPU chunk.
SHAPES = [(1,), (127,), (128,), (129,), (13, 17), (3, 5, 7), (1031,)]
# None: an unmasked parameter (a bias); then a random, an empty and a full mask.
DENSITIES = [None, 0.4, 0.0, 1.0, 0.4, None, 0.7]
# (dtype, steps, atol, rtol)
TOLERANCES = [(torch.float32, 6, 1e-6, 1e-5), (torch.float16, 4, 2e-3, 1e-2)]

SGD_CONFIGS = {
    "plain": dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    "momentum": dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
    "dampening+decay": dict(momentum=0.9, dampening=0.3, weight_decay=1e-2, nesterov=False),
    "nesterov+decay": dict(momentum=0.8, dampening=0.0, weight_decay=1e-2, nesterov=True),
    "maximize": dict(momentum=0.5, dampening=0.0, weight_decay=1e-2, nesterov=False, maximize=True),
}
ADAM_CONFIGS = {
    "plain": dict(),
    "coupled-decay": dict(weight_decay=1e-2),
    "decoupled-decay": dict(weight_decay=0.1, decoupled_weight_decay=True),
    "amsgrad+maximize": dict(amsgrad=True, maximize=True, weight_decay=1e-2),
    # 1 - beta1 >= 0.5 takes lerp's other branch.
    "small-beta1+amsgrad": dict(beta1=0.3, amsgrad=True),
}


def _entries(dtype, device):
    """Params (pruned entries already zero, as the optimizers keep them) and their masks."""
    params, masks = [], []
    for shape, density in zip(SHAPES, DENSITIES):
        mask = None if density is None else torch.rand(shape, device=device) < density
        param = torch.randn(shape, device=device).to(dtype)
        params.append(param if mask is None else param.masked_fill(~mask, 0))
        masks.append(mask)
    return params, masks


def _grads(params, masks, generator, garbage=False):
    """A fresh gradient per param; with ``garbage``, inf and NaN at the pruned entries."""
    grads = []
    for param, mask in zip(params, masks):
        grad = torch.randn(param.shape, generator=generator).to(param)
        if garbage and mask is not None:
            grad = grad.masked_fill(~mask, float("nan"))
            grad.view(-1)[:1].masked_fill_(~mask.view(-1)[:1], float("-inf"))
        grads.append(grad)
    return grads


def _sgd_run(step, params, masks, steps, config, garbage=False):
    params = [p.clone() for p in params]
    buffers = [None] * len(params)
    generator = torch.Generator().manual_seed(7)
    hyper = {"lr": 0.05, "maximize": False, **config}
    for _ in range(steps):
        step(params, _grads(params, masks, generator, garbage), masks, buffers, **hyper)
    return params, buffers


def _adam_state(params):
    return (
        [torch.zeros_like(p) for p in params],
        [torch.zeros_like(p) for p in params],
        [torch.zeros_like(p) for p in params],
        [torch.tensor(0.0, dtype=torch.float32) for _ in params],
    )


def _adam_run(step, params, masks, steps, config, eps, state=None, garbage=False):
    params = [p.clone() for p in params]
    state = _adam_state(params) if state is None else [[t.clone() for t in s] for s in state]
    generator = torch.Generator().manual_seed(7)
    hyper = dict(
        amsgrad=False,
        beta1=0.9,
        beta2=0.99,
        lr=1e-2,
        weight_decay=0.0,
        eps=eps,
        maximize=False,
        decoupled_weight_decay=False,
    )
    hyper.update(config)
    for _ in range(steps):
        step(params, _grads(params, masks, generator, garbage), masks, *state, **hyper)
    return params, *state


def _assert_close_lists(got, expected, atol, rtol):
    for i, (ours, theirs) in enumerate(zip(got, expected)):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, i
        torch.testing.assert_close(ours, theirs, atol=atol, rtol=rtol, msg=f"entry {i}")


def _assert_pruned_are_plus_zero(tensors, masks):
    for tensor, mask in zip(tensors, masks):
        if mask is None:
            continue
        pruned = tensor[~mask]
        assert torch.equal(pruned, torch.zeros_like(pruned))
        assert not torch.signbit(pruned).any()


@pytest.mark.parametrize("dtype,steps,atol,rtol", TOLERANCES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("config", SGD_CONFIGS.values(), ids=SGD_CONFIGS.keys())
def test_sgd_matches_reference(config, dtype, steps, atol, rtol, kernel_device):
    params, masks = _entries(dtype, kernel_device)
    ours = _sgd_run(fused.masked_sgd_step, params, masks, steps, config)
    theirs = _sgd_run(reference.masked_sgd_step, params, masks, steps, config)
    _assert_close_lists(ours[0], theirs[0], atol, rtol)
    if config["momentum"] == 0:
        assert ours[1] == [None] * len(params)
    else:
        # Created at the first step, in the list, then carried.
        _assert_close_lists(ours[1], theirs[1], atol, rtol)
        _assert_pruned_are_plus_zero(ours[1], masks)
    _assert_pruned_are_plus_zero(ours[0], masks)


@pytest.mark.parametrize("dtype,steps,atol,rtol", TOLERANCES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("config", ADAM_CONFIGS.values(), ids=ADAM_CONFIGS.keys())
def test_adam_matches_reference(config, dtype, steps, atol, rtol, kernel_device):
    params, masks = _entries(dtype, kernel_device)
    # An eps that fp16 can hold: 1e-8 rounds to 0 there, and the reference divides by zero
    # where a tiny gradient underflows its fp16 second moment, while the fp32 kernel does not.
    eps = 1e-8 if dtype == torch.float32 else 1e-3
    ours = _adam_run(fused.masked_adam_step, params, masks, steps, config, eps)
    theirs = _adam_run(reference.masked_adam_step, params, masks, steps, config, eps)
    amsgrad = config.get("amsgrad", False)
    for name, got, expected in zip(
        ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"), ours, theirs
    ):
        if name == "max_exp_avg_sqs" and not amsgrad:
            assert all(t.count_nonzero() == 0 for t in got), "max_exp_avg_sqs touched"
            continue
        _assert_close_lists(got, expected, atol, rtol)
        _assert_pruned_are_plus_zero(got, masks)
    assert [s.item() for s in ours[4]] == [float(steps)] * len(params)


def test_adam_bias_correction_follows_each_parameters_own_step(kernel_device):
    params, masks = _entries(torch.float32, kernel_device)
    state = _adam_state(params)
    # A parameter added to the optimizer later has taken fewer steps than the others.
    for i, step in enumerate(state[3]):
        step.fill_(3.0 * i)
    ours = _adam_run(fused.masked_adam_step, params, masks, 3, {}, 1e-8, state)
    theirs = _adam_run(reference.masked_adam_step, params, masks, 3, {}, 1e-8, state)
    _assert_close_lists(ours[0], theirs[0], 1e-6, 1e-5)
    assert [s.item() for s in ours[4]] == [3.0 * i + 3 for i in range(len(params))]


# The interpreter computes with numpy, which warns about the NaN the kernels then discard.
_NUMPY_NAN_WARNINGS = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@_NUMPY_NAN_WARNINGS
def test_sgd_garbage_at_pruned_entries_ends_as_plus_zero(kernel_device):
    params, masks = _entries(torch.float32, kernel_device)
    config = SGD_CONFIGS["nesterov+decay"]
    ours = _sgd_run(fused.masked_sgd_step, params, masks, 3, config, garbage=True)
    theirs = _sgd_run(reference.masked_sgd_step, params, masks, 3, config, garbage=True)
    _assert_close_lists(ours[0] + ours[1], theirs[0] + theirs[1], 1e-6, 1e-5)
    _assert_pruned_are_plus_zero(ours[0] + ours[1], masks * 2)


@_NUMPY_NAN_WARNINGS
def test_adam_garbage_at_pruned_entries_ends_as_plus_zero(kernel_device):
    params, masks = _entries(torch.float32, kernel_device)
    # State left at pruned entries (a mask that shrank, or written from outside): -0.0, NaN;
    # and inf and NaN in the gradients there.
    state = _adam_state(params)
    for tensors in state[:3]:
        for tensor, mask in zip(tensors, masks):
            if mask is not None:
                tensor.masked_fill_(~mask, float("nan"))
                tensor.view(-1)[:1].masked_fill_(~mask.view(-1)[:1], -0.0)
    for _name, config in ADAM_CONFIGS.items():
        ours = _adam_run(fused.masked_adam_step, params, masks, 2, config, 1e-8, state, True)
        theirs = _adam_run(reference.masked_adam_step, params, masks, 2, config, 1e-8, state, True)
        # Without amsgrad, max_exp_avg_sqs is neither read nor written (the garbage stays).
        kept_lists = 4 if config.get("amsgrad") else 3
        for got, expected in zip(ours[:kept_lists], theirs[:kept_lists]):
            _assert_close_lists(got, expected, 1e-6, 1e-5)
            _assert_pruned_are_plus_zero(got, masks)


def test_one_launch_per_parameter_dtype(monkeypatch, kernel_device):
    launches = []

    class CountingKernel:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launches.append(grid)
            return self.kernel[grid]

    monkeypatch.setattr(
        fused, "_masked_sgd_step_kernel", CountingKernel(fused._masked_sgd_step_kernel)
    )
    params, masks = _entries(torch.float32, kernel_device)
    half_params, half_masks = _entries(torch.float16, kernel_device)
    _sgd_run(fused.masked_sgd_step, params, masks, 1, SGD_CONFIGS["momentum"])
    assert len(launches) == 1
    # Every chunk of every entry is one program.
    chunk = fused.chunk_size()
    assert launches[0] == (sum(-(-p.numel() // chunk) for p in params),)
    _sgd_run(
        fused.masked_sgd_step, params + half_params, masks + half_masks, 1, SGD_CONFIGS["momentum"]
    )
    assert len(launches) == 3


def test_grads_and_masks_of_another_layout_are_read_correctly(kernel_device):
    # A channels-last weight with its state in the same layout, a contiguous mask and a
    # column-major gradient: the kernel walks the param's memory order.
    param = torch.randn(3, 4, 5, 6, device=kernel_device).to(memory_format=torch.channels_last)
    mask = torch.rand(3, 4, 5, 6, device=kernel_device) < 0.5
    param.masked_fill_(~mask, 0)
    grad = torch.randn(6, 5, 4, 3, device=kernel_device).permute(3, 2, 1, 0)
    results = []
    for step in (fused.masked_adam_step, reference.masked_adam_step):
        p = param.clone()
        state = _adam_state([p])
        step(
            [p],
            [grad],
            [mask],
            *state,
            amsgrad=True,
            beta1=0.9,
            beta2=0.99,
            lr=1e-2,
            weight_decay=1e-2,
            eps=1e-8,
            maximize=False,
            decoupled_weight_decay=False,
        )
        results.append([p, *(tensors[0] for tensors in state[:3])])
    _assert_close_lists(results[0], results[1], 1e-6, 1e-5)


def test_bad_input_fails_in_one_line(kernel_device):
    params, masks = _entries(torch.float32, kernel_device)
    grads = [torch.zeros_like(p) for p in params]
    hyper = dict(
        weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0, nesterov=False, maximize=False
    )
    with pytest.raises(ValueError, match="grads must be a list of 7 entries"):
        fused.masked_sgd_step(params, grads[:-1], masks, [None] * 7, **hyper)
    with pytest.raises(TypeError, match=r"params\[0\] must be a float32"):
        fused.masked_sgd_step([params[0].double()], [grads[0].double()], [None], [None], **hyper)
    with pytest.raises(ValueError, match=r"grads\[1\] is torch.float16"):
        fused.masked_sgd_step(
            params[:2], [grads[0], grads[1].half()], masks[:2], [None] * 2, **hyper
        )
    with pytest.raises(TypeError, match=r"masks\[1\] must be a bool or uint8"):
        fused.masked_sgd_step(params[:2], grads[:2], [None, masks[1].float()], [None] * 2, **hyper)
    weight = torch.randn(4, 6, device=kernel_device)
    column_major = torch.zeros(6, 4, device=kernel_device).t()
    with pytest.raises(ValueError, match=r"momentum_buffer_list\[0\] has strides \(1, 4\)"):
        fused.masked_sgd_step([weight], [torch.zeros_like(weight)], [None], [column_major], **hyper)
    assert torch.equal(column_major, torch.zeros_like(column_major))  # nothing was written


# A parameter of 2^31 + a chunk and a bit elements, and the chunks around its element 2^31.
_PAST_2_31 = 2**31
_SLOT = 4096  # elements between the tensors that share one storage (over two GPU chunks)


def _past_2_31_views(count, dtype, device, length):
    """``count`` dense 1-D views of ``length`` elements in one reserved storage, each starting
    2^31 elements in: an offset wrapped by 2^32 would still land inside it (wrong numbers, not
    a crash). Only the pages written are backed by memory on the CPU."""
    storage = torch.empty(_PAST_2_31 + count * _SLOT + length, dtype=dtype, device=device)
    return [storage[_PAST_2_31 + i * _SLOT :][:length] for i in range(count)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_elements_past_2_31_are_addressed_without_wrapping(optimizer, monkeypatch, kernel_device):
    if kernel_device == "cuda" and torch.cuda.mem_get_info()[0] < 13 * 2**30:
        pytest.skip("needs 13 GiB of free GPU memory")
    block = fused.chunk_size()
    length = _PAST_2_31 + block + 72
    # Run only the chunks around element 2^31 (all of them would take hours interpreted): the
    # kernel, the addresses and the sizes in its tables are the real ones.
    starts = torch.tensor([_PAST_2_31 - block, _PAST_2_31, _PAST_2_31 + block])
    monkeypatch.setattr(
        fused, "_chunk_table", lambda numels, chunk: (torch.zeros(3, dtype=torch.int64), starts)
    )
    window = slice(_PAST_2_31 - block, length)
    dtype, atol, rtol = torch.float16, 2e-3, 1e-2
    param, grad, *state = _past_2_31_views(
        5 if optimizer == "adam" else 3, dtype, kernel_device, length
    )
    (mask,) = _past_2_31_views(1, torch.bool, kernel_device, length)
    for tensor in (param, grad, *state):
        tensor[window] = torch.randn(length - window.start, device=kernel_device).abs()
    mask[window] = torch.rand(length - window.start, device=kernel_device) < 0.6
    small = [t[window].clone() for t in (param, grad, mask, *state)]
    if optimizer == "sgd":
        hyper = dict(
            weight_decay=1e-2, momentum=0.9, lr=0.05, dampening=0.0, nesterov=False, maximize=False
        )
        fused.masked_sgd_step([param], [grad], [mask], [state[0]], **hyper)
        reference.masked_sgd_step([small[0]], [small[1]], [small[2]], [small[3]], **hyper)
    else:
        hyper = dict(
            amsgrad=True,
            beta1=0.9,
            beta2=0.99,
            lr=1e-2,
            weight_decay=1e-2,
            eps=1e-3,
            maximize=False,
            decoupled_weight_decay=False,
        )
        fused.masked_adam_step(
            [param], [grad], [mask], *([t] for t in state), [torch.tensor(0.0)], **hyper
        )
        reference.masked_adam_step(
            [small[0]],
            [small[1]],
            [small[2]],
            *([t] for t in small[3:]),
            [torch.tensor(0.0)],
            **hyper,
        )
    expected = [small[0], *small[3:]]
    _assert_close_lists([t[window] for t in (param, *state)], expected, atol, rtol)


def _model(device):
    model = torch.nn.Sequential(MaskedLinear(13, 9), torch.nn.Tanh(), MaskedLinear(9, 3))
    model.to(device)
    for _, layer in masked_layers(model):
        layer.set_mask(torch.rand(layer.weight.shape, device=device) < 0.5)
    return model


def _train(optimizer_class, hyper, backend, monkeypatch, device, steps=20):
    """``steps`` steps of a fixed model and data; only the optimizer's step runs on
    ``backend`` (the forward and backward on the reference), so the step alone is compared."""
    torch.manual_seed(3)
    model = _model(device)
    optimizer = optimizer_class(model.parameters(), masks=model, **hyper)
    generator = torch.Generator().manual_seed(11)
    for _ in range(steps):
        inputs = torch.randn(5, 13, generator=generator).to(device)
        monkeypatch.setenv(ops.BACKEND_ENV_VAR, "reference")
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()
        monkeypatch.setenv(ops.BACKEND_ENV_VAR, backend)
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize(
    "optimizer_class,hyper",
    [
        (MaskedSGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
        (MaskedAdam, dict(lr=1e-2, amsgrad=True, weight_decay=1e-3)),
    ],
    ids=["sgd", "adam"],
)
def test_public_optimizers_on_the_triton_backend(
    optimizer_class, hyper, monkeypatch, kernel_device
):
    ours, ours_optimizer = _train(optimizer_class, hyper, "triton", monkeypatch, kernel_device)
    theirs, theirs_optimizer = _train(
        optimizer_class, hyper, "reference", monkeypatch, kernel_device
    )
    for (name, got), expected in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=name)
    for _, layer in masked_layers(ours):
        pruned = layer.weight[~layer.mask]
        assert torch.equal(pruned, torch.zeros_like(pruned))
        assert not torch.signbit(pruned).any()
    # The state the fused step created is what torch.optim keeps, under torch's keys.
    for param, expected_param in zip(ours.parameters(), theirs.parameters()):
        state, expected = ours_optimizer.state[param], theirs_optimizer.state[expected_param]
        assert state.keys() == expected.keys()
        for key in state:
            torch.testing.assert_close(state[key], expected[key], atol=1e-5, rtol=1e-4)
