import pytest
import torch

from sparse_tickets.pruning import Masks, random_like, random_scores
from sparse_tickets.pruning.random import seeded_generator
from tests.conftest import DEVICES
from tests.pruning.helpers import kept


def ticket(device="cpu"):
    return Masks(
        {
            "conv.weight": torch.rand(8, 3, 3, 3, device=device) < 0.3,
            "fc.weight": torch.rand(40, 25, device=device) < 0.1,
            "empty.weight": torch.zeros(4, device=device, dtype=torch.bool),
        }
    )


@pytest.mark.parametrize("device", DEVICES)
def test_random_like_keeps_exactly_the_counts_and_shapes_on_the_same_device(device):
    masks = ticket(device)
    shuffled = random_like(masks, seed=0)
    assert list(shuffled) == list(masks)
    for name, mask in masks.items():
        assert shuffled[name].shape == mask.shape and shuffled[name].device == mask.device
        assert kept(shuffled[name]) == kept(mask)
    assert shuffled != masks
    assert not shuffled.is_subset_of(masks)


def test_random_like_is_deterministic_per_seed():
    masks = ticket()
    assert random_like(masks, seed=5) == random_like(masks, seed=5)
    assert random_like(masks, seed=5) != random_like(masks, seed=6)


def test_random_like_without_a_seed_follows_the_global_generator():
    masks = ticket()
    torch.manual_seed(1)
    first = random_like(masks)
    torch.manual_seed(1)
    assert random_like(masks) == first


def test_random_like_accepts_a_plain_mapping():
    shuffled = random_like({"w": torch.tensor([1, 0, 0, 1])}, seed=0)
    assert isinstance(shuffled, Masks) and kept(shuffled["w"]) == 2


@pytest.mark.parametrize("device", DEVICES)
def test_random_scores_depend_only_on_the_seed_not_the_device(device):
    weight = torch.zeros(3, 4, device=device)
    scores = random_scores(weight, seeded_generator(2))
    assert scores.device == weight.device and scores.shape == weight.shape
    assert torch.equal(scores.cpu(), random_scores(torch.zeros(3, 4), seeded_generator(2)))


def test_seeded_generator_refuses_non_integer_seeds():
    assert seeded_generator(None) is None
    for seed in (1.5, True, "3"):
        with pytest.raises(TypeError, match="seed must be an int or None"):
            seeded_generator(seed)
