import torch

from sparse_tickets.pruning import STRATEGIES, magnitude_scores


def test_magnitude_scores_are_absolute_values_and_detached():
    weight = torch.tensor([[-3.0, 0.5], [0.0, -0.25]], requires_grad=True)
    scores = magnitude_scores(weight)
    assert torch.equal(scores, torch.tensor([[3.0, 0.5], [0.0, 0.25]]))
    assert not scores.requires_grad


def test_magnitude_scores_keep_low_precision_values_exactly():
    weight = torch.randn(100).to(torch.bfloat16)
    assert torch.equal(magnitude_scores(weight).float(), weight.float().abs())


def test_registry_names_the_strategies_of_the_command_line():
    assert list(STRATEGIES) == ["magnitude", "random"]
    assert STRATEGIES["magnitude"] is magnitude_scores
