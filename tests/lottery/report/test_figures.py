import pytest

from sparse_tickets.lottery.report.figures import (
    accuracy_figure,
    density_ticks,
    early_stop_figure,
    format_percent,
)
from sparse_tickets.lottery.report.results import load_configurations
from tests.lottery.report.fabricate import early_stop_iteration, early_stop_test_accuracy, make_run

SEEDS = (0, 1, 2)


@pytest.fixture
def three_seeds(tmp_path):
    return load_configurations([make_run(tmp_path, seed=seed) for seed in SEEDS])


def test_every_density_is_ticked_when_they_fit():
    assert density_ticks([51.2, 100.0, 80.0, 64.0, 80.0]) == [100.0, 80.0, 64.0, 51.2]


def test_twenty_levels_are_ticked_every_third_level():
    percents = [100 * 0.8**level for level in range(21)]
    ticks = density_ticks(percents)
    assert [format_percent(t) for t in ticks] == [
        "100",
        "51.2",
        "26.2",
        "13.4",
        "6.87",
        "3.52",
        "1.8",
    ]
    assert ticks == [percents[level] for level in range(0, 21, 3)]


def test_densities_too_close_to_tell_apart_share_a_tick():
    assert density_ticks([100.0, 99.0, 80.0, 80.0000001]) == pytest.approx([100.0, 80.0])


def test_the_accuracy_plot_has_a_reversed_log_density_axis_and_a_line_per_branch(three_seeds):
    axes = accuracy_figure(three_seeds).axes[0]
    assert axes.get_xscale() == "log"
    left, right = axes.get_xlim()
    assert left > 100 and right < 51.2  # density falls from left to right
    assert list(axes.get_xticks()) == pytest.approx([100, 80, 64, 51.2])
    assert [t.get_text() for t in axes.get_xticklabels()] == ["100", "80", "64", "51.2"]
    assert [t.get_text() for t in axes.get_legend().get_texts()] == [
        "ticket (3 seeds)",
        "random reinit (3 seeds)",
        "dense network (100%)",
    ]
    # Error bars from the lowest to the highest seed; the dense network's accuracy as a line.
    ticket, reinit = [container.lines[0] for container in axes.containers]
    dense = axes.get_lines()[-1]
    assert list(dense.get_ydata()) == pytest.approx([ticket.get_ydata()[0]] * 2)
    assert list(ticket.get_xdata()) == pytest.approx([100, 80, 64, 51.2])
    assert list(ticket.get_ydata()) == pytest.approx(
        [
            100 * sum(early_stop_test_accuracy("main", level, seed) for seed in SEEDS) / 3
            for level in range(4)
        ]
    )
    assert list(reinit.get_xdata()) == pytest.approx([80, 64, 51.2])
    assert "error bars: min–max" in axes.get_title()
    ((low, high),) = [
        container.lines[2][0].get_segments()[0][:, 1][[0, 1]] for container in axes.containers[:1]
    ]
    accuracies = [100 * early_stop_test_accuracy("main", 0, seed) for seed in SEEDS]
    assert (low, high) == pytest.approx((min(accuracies), max(accuracies)))


def test_the_early_stop_plot_shows_mean_iterations(three_seeds):
    axes = early_stop_figure(three_seeds).axes[0]
    ticket = axes.containers[0].lines[0]
    assert list(ticket.get_ydata()) == pytest.approx(
        [sum(early_stop_iteration("main", level, seed) for seed in SEEDS) / 3 for level in range(4)]
    )
    assert axes.get_ylabel() == "early-stop iteration"


def test_several_configurations_are_told_apart_in_the_legend(tmp_path):
    configurations = load_configurations([make_run(tmp_path), make_run(tmp_path, rewind="lr")])
    axes = accuracy_figure(configurations).axes[0]
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert labels == [
        "lenet_300_100/mnist5k, rewind init: ticket",
        "lenet_300_100/mnist5k, rewind init: random reinit",
        "lenet_300_100/mnist5k, rewind init: dense (100%)",
        "lenet_300_100/mnist5k, rewind lr: ticket",
        "lenet_300_100/mnist5k, rewind lr: random reinit",
    ]
    # Both configurations train the same dense level 0: one dense line, not two.
    # A single seed each: no spread to show.
    assert "error bars" not in axes.get_title() and not axes.containers
