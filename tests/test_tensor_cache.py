"""The cache of values derived from tensors: reused while the tensors are unchanged, recomputed
after an in-place write, a storage swap or for another tensor, dropped with the tensor."""

import torch

from sparse_tickets.tensor_cache import TensorCache, versions_of


class Counted:
    """``compute`` for the cache: the sum of a tensor, counting the calls."""

    def __init__(self, tensor):
        self.tensor, self.calls = tensor, 0

    def __call__(self):
        self.calls += 1
        return self.tensor.sum().item()


def test_a_value_is_reused_until_the_tensor_is_written_in_place():
    cache, tensor = TensorCache(), torch.ones(3)
    compute = Counted(tensor)
    assert cache.get((tensor,), compute) == 3.0
    assert cache.get((tensor,), compute) == 3.0
    assert compute.calls == 1
    tensor[0] = 5.0
    assert cache.get((tensor,), compute) == 7.0
    assert compute.calls == 2


def test_a_swapped_storage_is_seen_though_the_version_is_not_moved():
    cache, tensor = TensorCache(), torch.ones(3)
    compute = Counted(tensor)
    cache.get((tensor,), compute)
    version = tensor._version
    tensor.data = torch.zeros(3)  # as .to() or a layer leaving compact mode does
    assert tensor._version == version
    assert cache.get((tensor,), compute) == 0.0


def test_every_tensor_of_an_entry_counts_and_the_key_separates_values():
    cache, first, second = TensorCache(), torch.ones(2), torch.ones(2)
    assert cache.get((first, second), lambda: "a") == "a"
    second.add_(1)
    assert cache.get((first, second), lambda: "b") == "b"
    assert cache.get((first,), lambda: "c", key=(2, 2)) == "c"
    assert cache.get((first,), lambda: "d", key=(4, 4)) == "d"
    assert cache.get((first,), lambda: "e", key=(2, 2)) == "c"


def test_an_entry_dies_with_its_tensor_and_a_reused_id_is_not_trusted():
    cache, tensor, other = TensorCache(), torch.ones(2), torch.zeros(2)
    cache.get((tensor,), lambda: "tensor's")
    # The entry as it would be found if `other` had been given the freed tensor's id.
    cache._entries[(id(other), ())] = cache._entries.pop((id(tensor), ()))
    assert cache.get((other,), lambda: "other's") == "other's"
    assert len(cache) == 1
    del other
    assert len(cache) == 0


def test_tensors_without_a_version_are_computed_every_time():
    with torch.inference_mode():
        tensor = torch.ones(2)
    assert versions_of((tensor,)) is None
    cache, compute = TensorCache(), Counted(tensor)
    cache.get((tensor,), compute)
    cache.get((tensor,), compute)
    assert compute.calls == 2 and len(cache) == 0
