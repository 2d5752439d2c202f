"""torch.compile(fullgraph=True) on the real models of tests/nn/real_models.py, pruned to 10%, in
dense and in compact mode: no graph break, and the loss and every gradient equal eager.

The ``aot_eager`` backend traces the whole model with dynamo and its forward and backward with
AOTAutograd, which is where graph breaks and custom-op schemas show; inductor's code generation
adds minutes per model on a small CPU and nothing this test checks.
"""

import pytest
import torch
from torch._dynamo.utils import counters

from sparse_tickets.compact.choice import default_mode_set_to
from tests.nn.real_models import BUILDERS
from tests.nn.test_real_models import pruned


def loss_and_grads(case, model, run=None):
    model.zero_grad(set_to_none=True)
    # From the outputs, not the model's own loss: transformers' loss helper logs a warning
    # once, a graph break of its own.
    loss = case.output(model if run is None else run, case.inputs).square().mean()
    loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters()
             if param.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("mode", ["dense", "compact"])
@pytest.mark.parametrize("build", BUILDERS)
def test_fullgraph_compile_equals_eager(build, mode):
    case, model, masks, _ = pruned(build)
    with default_mode_set_to(mode):
        masks.apply_to(model)
    model.eval()
    expected_loss, expected_grads = loss_and_grads(case, model)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss, grads = loss_and_grads(case, model, compiled)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
