import pytest

from sparse_tickets.pruning.names import check_known, format_names, mask_key


def test_mask_key_is_the_weights_state_dict_name():
    assert mask_key("features.0") == "features.0.weight"
    assert mask_key("") == "weight"


def test_format_names_shows_a_few_and_counts_the_rest():
    assert format_names([]) == "none"
    assert format_names(["a", "b"]) == "'a', 'b'"
    assert format_names(["a", "b", "c", "d", "e"]) == "'a', 'b', 'c' and 2 more"


def test_check_known_lists_unknown_names_and_hints_at_the_weight_name():
    known = {"fc1.weight": None, "fc2.weight": None}
    check_known("exclude", ["fc1.weight"], known)
    with pytest.raises(
        ValueError,
        match=r"^exclude names layers not in the masks: 'fc1', 'x' "
        r"\(did you mean 'fc1.weight'\?\); expected names such "
        r"as 'fc1.weight', 'fc2.weight'$",
    ):
        check_known("exclude", ["fc1", "x"], known)
