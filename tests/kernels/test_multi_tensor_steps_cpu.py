"""``adam_steps_``, the C++ Adam step over a whole param group in one call, against
``adam_step_`` called once per tensor after torch.optim's counter increment: bitwise equal in
every param, state tensor and counter, with and without masks and amsgrad.

It needs the compiled CPU extension: without it these tests fail (they never skip).
"""

import pytest
import torch

from sparse_tickets.ops.native import extension

ops = torch.ops.sparse_tickets
HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=1e-2, maximize=False)


@pytest.fixture(autouse=True)
def _extension():
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here


def _group(dtype, amsgrad, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(1,), (7, 5), (300,), (13, 3, 3, 3), (0,)]
    params = [torch.randn(s, generator=generator, dtype=dtype) for s in shapes]
    masks = [
        None,
        torch.rand(7, 5, generator=generator) < 0.5,
        None,
        torch.rand(13, 3, 3, 3, generator=generator) < 0.1,
        None,
    ]
    for param, mask in zip(params, masks):
        if mask is not None:
            param.mul_(mask)
    return {
        "params": params,
        "grads": [torch.randn(s, generator=generator, dtype=dtype) for s in shapes],
        "exp_avgs": [torch.rand(s, generator=generator, dtype=dtype) for s in shapes],
        "exp_avg_sqs": [torch.rand(s, generator=generator, dtype=dtype) for s in shapes],
        "max_exp_avg_sqs": (
            [torch.rand(s, generator=generator, dtype=dtype) for s in shapes] if amsgrad else []
        ),
        "masks": masks,
        "state_steps": [torch.tensor(float(k), dtype=torch.float32) for k in (0, 1, 5, 99, 2)],
    }


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["plain", "amsgrad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_one_call_equals_one_call_per_tensor_bitwise(dtype, amsgrad, decoupled):
    together, apart = _group(dtype, amsgrad), _group(dtype, amsgrad)
    for _ in range(3):
        ops.adam_steps_(
            together["params"],
            together["grads"],
            together["exp_avgs"],
            together["exp_avg_sqs"],
            together["max_exp_avg_sqs"],
            together["masks"],
            together["state_steps"],
            amsgrad=amsgrad,
            decoupled_weight_decay=decoupled,
            **HYPER,
        )
        for i, param in enumerate(apart["params"]):
            apart["state_steps"][i] += 1
            ops.adam_step_(
                param,
                apart["grads"][i],
                apart["exp_avgs"][i],
                apart["exp_avg_sqs"][i],
                apart["max_exp_avg_sqs"][i] if amsgrad else param.new_empty(0),
                apart["masks"][i],
                step=apart["state_steps"][i].item(),
                amsgrad=amsgrad,
                decoupled_weight_decay=decoupled,
                **HYPER,
            )
    for key in ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"):
        for got, want in zip(together[key], apart[key]):
            assert torch.equal(got, want), key


def test_lists_of_different_lengths_and_bad_counters_are_refused():
    group = _group(torch.float32, amsgrad=False)
    with pytest.raises(RuntimeError, match="one entry per param"):
        ops.adam_steps_(
            group["params"],
            group["grads"][:-1],
            group["exp_avgs"],
            group["exp_avg_sqs"],
            [],
            group["masks"],
            group["state_steps"],
            amsgrad=False,
            decoupled_weight_decay=False,
            **HYPER,
        )
    group["state_steps"][0] = torch.tensor(0.0, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"state_steps\[0\] must be a float32 scalar"):
        ops.adam_steps_(
            group["params"],
            group["grads"],
            group["exp_avgs"],
            group["exp_avg_sqs"],
            [],
            group["masks"],
            group["state_steps"],
            amsgrad=False,
            decoupled_weight_decay=False,
            **HYPER,
        )


def test_opcheck():
    group = _group(torch.float32, amsgrad=True)
    torch.library.opcheck(
        ops.adam_steps_.default,
        (
            group["params"],
            group["grads"],
            group["exp_avgs"],
            group["exp_avg_sqs"],
            group["max_exp_avg_sqs"],
            group["masks"],
            group["state_steps"],
            1e-3,
            0.9,
            0.999,
            1e-8,
            0.0,
            True,
            False,
            False,
        ),
    )
