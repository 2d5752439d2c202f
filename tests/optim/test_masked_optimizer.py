import copy
import pickle
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from sparse_tickets import ops
from sparse_tickets.ops import BACKEND_ENV_VAR, BackendError, dispatch
from sparse_tickets.ops.reference import ReferenceBackend
from sparse_tickets.optim import MaskedAdam, MaskedSGD
from tests.optim.optim_parity import (
    assert_pruned_entries_are_zero,
    assert_same_parameters,
    assert_same_state,
    batches,
    layer_masks,
    loss_of,
    masked_model,
    train,
    train_baseline,
    weights_and_others,
)

# name -> (masked optimizer, its torch.optim twin, hyperparameters for both)
OPTIMIZERS = {
    "sgd": (
        MaskedSGD,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    "adam": (MaskedAdam, torch.optim.Adam, dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
}

SCHEDULERS = {
    "StepLR": (
        lambda optimizer: lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5),
        lambda base, epoch: base * 0.5 ** (epoch // 5),
    ),
    "MultiStepLR": (
        lambda optimizer: lr_scheduler.MultiStepLR(optimizer, [4, 11], gamma=0.3),
        lambda base, epoch: base * 0.3 ** ((epoch >= 4) + (epoch >= 11)),
    ),
    "LambdaLR": (
        lambda optimizer: lr_scheduler.LambdaLR(optimizer, lambda e: 1 / (1 + e)),
        lambda base, epoch: base / (1 + epoch),
    ),
}


def group_settings(optimizer) -> list[dict]:
    """Each param group's hyperparameters (everything but the parameters)."""
    return [
        {key: value for key, value in group.items() if key != "params"}
        for group in optimizer.param_groups
    ]


def pair(name, model, baseline):
    masked_class, torch_class, hyperparameters = OPTIMIZERS[name]
    return (
        masked_class(model.parameters(), masks=model, **hyperparameters),
        torch_class(baseline.parameters(), foreach=False, **hyperparameters),
    )


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lr_schedulers_drive_the_masked_optimizers_as_torchs(name, scheduler):
    make_scheduler, expected_lr = SCHEDULERS[scheduler]
    model = masked_model()
    baseline = copy.deepcopy(model)
    optimizer, baseline_optimizer = pair(name, model, baseline)
    base_lr = optimizer.param_groups[0]["lr"]
    schedule, baseline_schedule = make_scheduler(optimizer), make_scheduler(baseline_optimizer)
    with warnings.catch_warnings():
        # e.g. "lr_scheduler.step() before optimizer.step()": the step must look like torch's.
        warnings.simplefilter("error")
        train(model, optimizer, batches(15), schedule)
    train_baseline(
        baseline, baseline_optimizer, layer_masks(baseline), batches(15), baseline_schedule
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr(base_lr, 15))
    assert optimizer.param_groups[0]["lr"] < base_lr
    assert_same_parameters(model, baseline)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_closure_is_evaluated_and_its_loss_returned(name):
    model = masked_model()
    baseline = copy.deepcopy(model)
    optimizer, baseline_optimizer = pair(name, model, baseline)
    data = batches(5)
    for batch in data:

        def closure(batch=batch):
            optimizer.zero_grad()
            loss = loss_of(model, batch)
            loss.backward()
            return loss

        with torch.no_grad():  # the step must turn gradients back on for the closure
            loss = optimizer.step(closure)
        assert loss.requires_grad and torch.equal(loss, loss_of(baseline, batch))
        train_baseline(baseline, baseline_optimizer, layer_masks(baseline), [batch])
    assert_same_parameters(model, baseline)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_resumes_exactly(name, tmp_path):
    masked_class, _, hyperparameters = OPTIMIZERS[name]
    data = batches(20)
    uninterrupted = masked_model()
    interrupted = copy.deepcopy(uninterrupted)
    uninterrupted_optimizer = masked_class(
        uninterrupted.parameters(), masks=uninterrupted, **hyperparameters
    )
    train(uninterrupted, uninterrupted_optimizer, data)

    optimizer = masked_class(interrupted.parameters(), masks=interrupted, **hyperparameters)
    train(interrupted, optimizer, data[:8])
    torch.save(
        {"model": interrupted.state_dict(), "optimizer": optimizer.state_dict()},
        tmp_path / "checkpoint.pt",
    )

    resumed = masked_model()  # other initial weights and masks, all replaced by the load
    checkpoint = torch.load(tmp_path / "checkpoint.pt")
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = masked_class(resumed.parameters(), lr=123.0, masks=resumed)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    train(resumed, resumed_optimizer, data[8:])

    assert_same_parameters(resumed, uninterrupted)
    assert_same_state(resumed_optimizer, uninterrupted_optimizer)
    assert group_settings(resumed_optimizer) == group_settings(uninterrupted_optimizer)
    assert_pruned_entries_are_zero(resumed, resumed_optimizer)


def test_deepcopy_and_pickle_keep_the_masks():
    model = masked_model()
    optimizer = MaskedAdam(model.parameters(), lr=0.1, weight_decay=0.5, masks=model)
    train(model, optimizer, batches(1))
    for copied_model, copied_optimizer in (
        copy.deepcopy((model, optimizer)),
        pickle.loads(pickle.dumps((model, optimizer))),
    ):
        with torch.no_grad():
            for param in copied_model.parameters():
                param.add_(1.0)  # pruned weights too: the copied step must zero them
        train(copied_model, copied_optimizer, batches(2))
        assert copied_optimizer.state[copied_model[0].weight]["step"].item() == 3
        assert_pruned_entries_are_zero(copied_model, copied_optimizer)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_add_param_group_checks_hyperparameters(name):
    masked_class, _, _ = OPTIMIZERS[name]
    model = masked_model()
    optimizer = masked_class([model[0].weight], masks=model)
    with pytest.raises(ValueError, match=r"^lr must be >= 0; got -0.5$"):
        optimizer.add_param_group({"params": [model[0].bias], "lr": -0.5})
    assert len(optimizer.param_groups) == 1
    optimizer.add_param_group({"params": [model[3].weight], "lr": 0.5})
    assert optimizer.param_groups[1]["lr"] == 0.5
    with pytest.raises(TypeError, match="param_group must be a dict"):
        optimizer.add_param_group([model[5].weight])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_added_later_follow_their_layers_masks(name):
    masked_class, _, hyperparameters = OPTIMIZERS[name]
    model = masked_model()
    optimizer = masked_class([model[0].weight], masks=model, **hyperparameters)
    optimizer.add_param_group(
        {"params": [p for p in model.parameters() if p is not model[0].weight]}
    )
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    train(model, optimizer, batches(2))
    assert_pruned_entries_are_zero(model, optimizer)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_without_gradient_are_left_alone(name):
    masked_class, _, hyperparameters = OPTIMIZERS[name]
    model = masked_model()
    optimizer = masked_class(model.parameters(), masks=model, **hyperparameters)
    model[0].requires_grad_(False)
    before = model[0].weight.detach().clone()
    train(model, optimizer, batches(2))
    assert torch.equal(model[0].weight, before)
    assert len(optimizer.state[model[0].weight]) == 0


def test_a_group_spanning_two_devices_steps_each_device_apart():
    # One backend call serves one device; "meta" stands in for a second device here.
    on_cpu = nn.Parameter(torch.randn(6))
    on_meta = nn.Parameter(torch.empty(6, device="meta"))
    alone = nn.Parameter(on_cpu.detach().clone())
    optimizer = MaskedSGD([on_meta, on_cpu], lr=0.1, momentum=0.9, masks={})
    baseline_optimizer = torch.optim.SGD([alone], lr=0.1, momentum=0.9, foreach=False)
    for _ in range(3):
        on_cpu.grad = torch.randn(6)
        on_meta.grad = torch.empty(6, device="meta")
        alone.grad = on_cpu.grad.clone()
        optimizer.step()
        baseline_optimizer.step()
    assert torch.equal(on_cpu, alone)
    assert optimizer.state[on_meta]["momentum_buffer"].device.type == "meta"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sparse_gradients_are_refused_naming_the_parameter(name):
    masked_class, _, _ = OPTIMIZERS[name]
    model = masked_model()
    optimizer = masked_class(model.parameters(), masks=model)
    model[3].bias.grad = torch.zeros(8).to_sparse()
    with pytest.raises(
        ValueError,
        match=rf"^3.bias has a sparse gradient; {masked_class.__name__}"
        rf" needs dense gradients$",
    ):
        optimizer.step()


class Float64StepBackend(ReferenceBackend):
    """A second backend (the reference maths, float64 only) that records each step call."""

    name = "float64steps"
    dtypes = frozenset({torch.float64})

    def __init__(self):
        self.calls = []

    def masked_sgd_step(
        self,
        params,
        grads,
        masks,
        momentum_buffer_list,
        *,
        weight_decay,
        momentum,
        lr,
        dampening,
        nesterov,
        maximize,
    ):
        self.calls.append(len(params))
        super().masked_sgd_step(
            params,
            grads,
            masks,
            momentum_buffer_list,
            weight_decay=weight_decay,
            momentum=momentum,
            lr=lr,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
        )

    def masked_adam_step(
        self,
        params,
        grads,
        masks,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        *,
        amsgrad,
        beta1,
        beta2,
        lr,
        weight_decay,
        eps,
        maximize,
        decoupled_weight_decay,
    ):
        self.calls.append(len(params))
        super().masked_adam_step(
            params,
            grads,
            masks,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            state_steps,
            amsgrad=amsgrad,
            beta1=beta1,
            beta2=beta2,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_group_is_one_call_to_the_backend_dispatch_chose(name, monkeypatch):
    monkeypatch.setattr(dispatch, "_REGISTRY", list(dispatch._REGISTRY))
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    backend = ops.register(Float64StepBackend(), before=ops.registered_names()[0])
    masked_class, torch_class, hyperparameters = OPTIMIZERS[name]
    # float32 falls through to the other backends; float64 is one call per group of 3 tensors
    # (the three weights, then the three biases), per step.
    for dtype, calls in ((torch.float32, []), (torch.float64, [3, 3, 3, 3])):
        backend.calls.clear()
        model = masked_model(dtype)
        baseline = copy.deepcopy(model)
        optimizer = masked_class(
            weights_and_others(model, 0.01, 0.02), masks=model, **hyperparameters
        )
        baseline_optimizer = torch_class(
            weights_and_others(baseline, 0.01, 0.02), foreach=False, **hyperparameters
        )
        train(model, optimizer, batches(2, dtype))
        train_baseline(baseline, baseline_optimizer, layer_masks(baseline), batches(2, dtype))
        assert backend.calls == calls
        assert_same_parameters(model, baseline)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_step_goes_through_backend_dispatch(name, monkeypatch):
    masked_class, _, _ = OPTIMIZERS[name]
    model = masked_model()
    optimizer = masked_class(model.parameters(), masks=model)
    monkeypatch.setenv(BACKEND_ENV_VAR, "reference")
    train(model, optimizer, batches(1))
    monkeypatch.setenv(BACKEND_ENV_VAR, "no-such-backend")
    with pytest.raises(BackendError, match="unknown backend 'no-such-backend'"):
        train(model, optimizer, batches(1))
