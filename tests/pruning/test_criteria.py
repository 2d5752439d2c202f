"""The registry of pruning criteria: built-in order, kinds, and what registration refuses."""

import pytest

from sparse_tickets.pruning import (
    AT_INIT_METHODS,
    CRITERIA,
    STRATEGIES,
    Criterion,
    get_criterion,
    register_criterion,
    unregister_criterion,
)
from sparse_tickets.pruning.strategies import BUILT_IN


class Zeros(Criterion):
    name = "zeros"

    def scores(self, context):
        return {name: weight * 0 for name, weight in context.weights.items()}


@pytest.fixture
def zeros():
    register_criterion(Zeros)
    yield get_criterion("zeros")
    unregister_criterion("zeros")


def test_built_in_criteria_in_the_command_lines_order_and_kinds():
    assert list(CRITERIA) == ["magnitude", "random", "snip", "grasp", "synflow"]
    assert [type(criterion) for criterion in CRITERIA.values()] == list(BUILT_IN)
    assert list(STRATEGIES) == ["magnitude", "random"]
    assert list(AT_INIT_METHODS) == ["snip", "grasp", "synflow"]
    assert [name for name, c in CRITERIA.items() if c.needs_batches] == ["snip", "grasp"]


def test_the_views_are_live(zeros):
    assert isinstance(zeros, Zeros)
    assert list(STRATEGIES) == ["magnitude", "random", "zeros"]
    assert "zeros" in CRITERIA and "zeros" not in AT_INIT_METHODS
    unregister_criterion("zeros")
    assert "zeros" not in STRATEGIES and get_criterion("zeros") is None
    register_criterion(Zeros)  # for the fixture's teardown


def test_get_criterion_of_anything_else_is_none():
    assert get_criterion("largest") is None and get_criterion(["magnitude"]) is None


@pytest.mark.parametrize("name", ["", "Magnitude", "two words", "1st", "a-b", None])
def test_a_name_the_command_line_cannot_take_is_refused(name):
    bad = type("Bad", (Zeros,), {"name": name})
    with pytest.raises(ValueError, match=r"^Bad.name is .*; expected lower-case letters"):
        register_criterion(bad)


def test_registering_a_name_twice_or_a_non_criterion_is_refused(zeros):
    with pytest.raises(ValueError, match=r"^criterion 'zeros' is already registered \(Zeros\)$"):
        register_criterion(Zeros)
    with pytest.raises(TypeError, match="^expected a Criterion subclass; got"):
        register_criterion(Zeros())
    with pytest.raises(KeyError, match="no criterion 'largest' is registered"):
        unregister_criterion("largest")


def test_a_criterion_must_define_scores():
    class Scoreless(Criterion):
        name = "scoreless"

    with pytest.raises(TypeError, match="abstract"):
        register_criterion(Scoreless)
    assert get_criterion("scoreless") is None
