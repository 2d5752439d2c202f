import torch

from sparse_tickets.pruning import STRATEGIES, ScoringContext, magnitude_scores
from sparse_tickets.pruning.magnitude import Magnitude


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
    assert isinstance(STRATEGIES["magnitude"], Magnitude)


def test_the_criterion_scores_each_layer_it_is_given_by_magnitude():
    weights = {"a": torch.tensor([-2.0, 1.0]), "b": torch.tensor([[0.5], [-0.25]])}
    masks = {name: torch.ones_like(weight, dtype=torch.bool) for name, weight in weights.items()}
    scores = Magnitude().scores(ScoringContext(weights=weights, masks=masks))
    assert list(scores) == ["a", "b"]
    for name, weight in weights.items():
        assert torch.equal(scores[name], magnitude_scores(weight))
