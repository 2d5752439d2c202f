import json

import torch

from sparse_tickets.pruning import LayerDensity, Masks


def masks():
    return Masks(
        {
            "features.0.weight": torch.arange(150).reshape(6, 1, 5, 5) < 120,
            "fc.weight": torch.arange(10).reshape(2, 5) < 1,
        }
    )


def test_rows_carry_the_figures_of_each_layer():
    rows = masks().density_rows()
    assert rows == [
        LayerDensity("features.0.weight", (6, 1, 5, 5), 120, 150),
        LayerDensity("fc.weight", (2, 5), 1, 10),
    ]
    assert rows[0].density == 0.8 and rows[1].density == 0.1
    assert LayerDensity("empty", (0,), 0, 0).density == 0.0


def test_rows_serialise_to_json_with_their_density():
    decoded = json.loads(json.dumps([row.as_dict() for row in masks().density_rows()]))
    assert decoded[0] == {
        "name": "features.0.weight",
        "shape": [6, 1, 5, 5],
        "kept": 120,
        "total": 150,
        "density": 0.8,
    }


def test_report_has_a_line_per_layer_and_a_total():
    lines = masks().density_report().splitlines()
    assert lines[0].split() == ["layer", "shape", "kept", "total", "density"]
    assert lines[1].split() == [
        "features.0.weight",
        "(6,",
        "1,",
        "5,",
        "5)",
        "120",
        "150",
        "80.00%",
    ]
    assert lines[2].split() == ["fc.weight", "(2,", "5)", "1", "10", "10.00%"]
    assert lines[3].split() == ["total", "121", "160", "75.62%"]
    # Fixed width: the numbers of every line end in the same column.
    assert len({len(line) for line in lines}) == 1
