"""torch.compile(fullgraph=True) on the real models of tests/nn/real_models.py, pruned to 10%, in
dense and in compact mode: no graph break, no warning, and the loss and every gradient equal
eager, for the model compiled right after its masks changed and for a deep-copied or unpickled
copy whose very first forward is compiled.

The ``aot_eager`` backend traces the whole model with dynamo and its forward and backward with
AOTAutograd, which is where graph breaks and custom-op schemas show; inductor's code generation
adds minutes per model on a small CPU and nothing this test checks.
"""

import copy
import pickle
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

import sparse_tickets as st
from sparse_tickets.compact.choice import default_mode_set_to
from tests.nn.real_models import BUILDERS, bert, gpt2, llama, needs_transformers
from tests.nn.test_real_models import pruned


def loss_and_grads(case, model, run=None):
    model.zero_grad(set_to_none=True)
    # From the outputs, not the model's own loss: transformers' loss helper logs a warning
    # once, a graph break of its own.
    loss = case.output(model if run is None else run, case.inputs).square().mean()
    loss.backward()
    grads = {
        name: param.grad.clone()
        for name, param in model.named_parameters()
        if param.grad is not None
    }
    return loss.detach(), grads


def compiled_loss_and_grads(case, model):
    """The loss and gradients of ``model`` compiled with fullgraph=True, on a fresh dynamo;
    fails on a graph break, a second graph or a warning about this package's code."""
    torch._dynamo.reset()
    counters.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = loss_and_grads(
            case, model, torch.compile(model, backend="aot_eager", fullgraph=True)
        )
    ours = [str(w.message) for w in caught if "sparse_tickets" in f"{w.filename} {w.message}"]
    assert not ours, ours
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    return result


def assert_same(result, expected):
    (loss, grads), (expected_loss, expected_grads) = result, expected
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def assert_pruned_gradients_are_zero(model):
    for name, source in st.masked_weights(model).items():
        if source.mode == "dense":  # compact values hold no pruned entry
            grad = source.trainable_weight.grad
            assert grad is not None and not bool(grad[~source.mask].any()), name


@pytest.mark.parametrize("mode", ["dense", "compact"])
@pytest.mark.parametrize("build", BUILDERS)
def test_fullgraph_compile_right_after_a_mask_change_equals_eager(build, mode):
    case, model, masks, _ = pruned(build)
    with default_mode_set_to(mode):
        masks.apply_to(model)
    model.eval()
    # Compiled first: no eager forward has run since the masks changed.
    result = compiled_loss_and_grads(case, model)
    assert_pruned_gradients_are_zero(model)
    assert_same(result, loss_and_grads(case, model))


COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda model: pickle.loads(pickle.dumps(model))}


@needs_transformers
@pytest.mark.parametrize(
    "build,copy_with",
    [(gpt2, "pickle"), (bert, "deepcopy"), (llama, "deepcopy")],
    ids=["gpt2-pickle", "bert-deepcopy", "llama-deepcopy"],
)
def test_a_copy_compiled_first_masks_every_gradient(build, copy_with):
    # Compact where a layer can be; Embedding, Conv1D and tied weights are masked by hooks,
    # which the copy must have before its first forward, a compiled one.
    case, model, masks, _ = pruned(build)
    with default_mode_set_to("compact"):
        masks.apply_to(model)
    model.eval()
    copied = COPIES[copy_with](model)
    result = compiled_loss_and_grads(case, copied)
    assert_pruned_gradients_are_zero(copied)
    assert_same(result, loss_and_grads(case, model))
