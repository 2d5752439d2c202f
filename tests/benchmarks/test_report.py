"""Ratios, tables and plots of the benchmark report, on rows made up for the purpose."""

import json

import pytest

from benchmarks import report
from benchmarks.machine import device_slug
from benchmarks.rows import Row, load_results, with_ratios


def _row(provider, sparsity, median_s, op="masked_linear.forward", shape="s 2x3->4"):
    kind = "backend" if provider == "reference" else "baseline"
    return Row(op, provider, kind, shape, "float32", sparsity, median_s, rounds=3)


def test_ratios_are_baseline_time_over_row_time_within_the_group():
    rows = with_ratios(
        [
            _row("dense", 0.0, 2.0),
            _row("prune_style", 0.9, 4.0),
            _row("reference", 0.9, 1.0),
            _row("reference", 0.5, 1.0),
            _row("reference", 0.9, 1.0, shape="other"),
        ]
    )
    dense, prune_style, reference, half, other = rows
    assert dense.vs_dense == 1.0
    assert prune_style.vs_dense == 0.5 and prune_style.vs_prune_style == 1.0
    assert reference.vs_dense == 2.0 and reference.vs_prune_style == 4.0
    assert half.vs_prune_style is None  # no prune-style row at that sparsity
    assert other.vs_dense is None  # another shape is another group
    assert reference.ideal_vs_dense == pytest.approx(10.0)


def _results_json(path, rows):
    entries = [
        {
            "name": f"test_forward[{i}]",
            "fullname": f"x.py::test_forward[{i}]",
            "group": "g",
            "stats": {"median": row.median_s, "rounds": row.rounds},
            "extra_info": {
                "op": row.op,
                "provider": row.provider,
                "provider_kind": row.provider_kind,
                "shape": row.shape,
                "dtype": row.dtype,
                "sparsity": row.sparsity,
            },
        }
        for i, row in enumerate(rows)
    ]
    path.write_text(
        json.dumps({"machine_info": {"device_name": "test cpu"}, "benchmarks": entries})
    )
    return path


def test_report_writes_table_and_plot_from_json(tmp_path):
    rows = [_row("dense", 0.0, 2.0)] + [
        _row(p, s, t)
        for p, t in (("prune_style", 2.5), ("reference", 2.4))
        for s in (0.0, 0.9, 0.99)
    ]
    json_path = _results_json(tmp_path / "results.json", rows)
    written = report.write_report(json_path, tmp_path / "out")
    assert [path.name for path in written] == ["results.md", "masked_linear.png"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert (
        "| forward | s 2x3->4 | float32 | reference | 99.0% | 2.4 s | 0.83 | 1.04 | 100.0 |"
        in table
    )
    machine_info, loaded = load_results(json_path)
    assert machine_info == {"device_name": "test cpu"}
    assert [(r.provider, r.sparsity, r.median_s) for r in loaded] == [
        (r.provider, r.sparsity, r.median_s) for r in rows
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "is not JSON"),
        ('{"rows": []}', "has no 'benchmarks' list"),
        (
            '{"benchmarks": [{"name": "t", "stats": {"median": 1, "rounds": 1}, '
            '"extra_info": {}}]}',
            "lacks extra_info op",
        ),
    ],
)
def test_bad_results_fail_in_one_line(tmp_path, text, message):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_results(path)
    assert "\n" not in str(error.value)


def test_missing_results_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no benchmark results at"):
        load_results(tmp_path / "absent.json")


def test_device_slug_is_a_folder_name():
    slug = device_slug("cpu")
    assert slug.startswith("cpu-") and slug.endswith("threads")
    assert all(c.isalnum() or c == "-" for c in slug) and slug == slug.lower()


def test_headline_reads_compact_speedups_off_the_baseline_rows():
    from benchmarks import headline
    from benchmarks.profiles import LENET_300_100
    from benchmarks.shapes import LARGE_BATCH64

    large = LARGE_BATCH64.label

    def compact(op, shape, sparsity, median_s, **fields):
        return Row(
            op,
            "compact",
            "mode",
            shape,
            "float32",
            sparsity,
            median_s,
            rounds=3,
            backend="cpu",
            **fields,
        )

    rows = with_ratios(
        [
            _row("dense", 0.0, 8e-3, shape=large),
            _row("torch_csr", 0.95, 4e-3, shape=large),
            compact("masked_linear.forward", large, 0.95, 1e-3),
            compact("masked_linear.forward", large, 0.5, 1e-3),  # not a headline sparsity
            _row("dense", 0.0, 0.2, op="train_step.adam", shape=large),
            compact("train_step.adam", large, 0.95, 0.05),
            compact("train_step.adam", large, 0.9, 0.05),
            Row(
                "end_to_end.train",
                "dense",
                "baseline",
                LENET_300_100.label,
                "float32",
                0.0,
                0.016,
                rounds=3,
                iterations_per_call=20,
            ),
            compact("end_to_end.train", LENET_300_100.label, 0.965, 0.004, iterations_per_call=20),
        ]
    )
    lines = headline.render(rows)
    assert lines[0].startswith("## Headline")
    body = [
        line
        for line in lines
        if line.startswith("| ") and "speedup" not in line and "---" not in line
    ]
    assert body == [
        "| forward, 4096x4096 at batch 64 | float32 | 95.0% | compact (cpu) | 1 ms | dense | "
        "8 ms | 8.00 |",
        "| forward, 4096x4096 at batch 64 | float32 | 95.0% | compact (cpu) | 1 ms | torch_csr "
        "| 4 ms | 4.00 |",
        "| training step (forward, backward, Adam), 4096x4096 at batch 64 | float32 | 90.0% | "
        "compact (cpu) | 50 ms | dense | 200 ms | 4.00 |",
        "| training step (forward, backward, Adam), 4096x4096 at batch 64 | float32 | 95.0% | "
        "compact (cpu) | 50 ms | dense | 200 ms | 4.00 |",
        "| LeNet-300-100 training, the IMP level at 3.5% density (per 1,000 iterations) | "
        "float32 | 96.5% | compact (cpu) | 0.20 s | dense | 0.80 s | 4.00 |",
    ]
    # Without the rows it reads (a quick run), there is no headline at all.
    assert headline.render([_row("dense", 0.0, 1.0), _row("reference", 0.9, 1.0)]) == []


def test_table_names_the_backend_a_compact_row_ran_on(tmp_path):
    rows = [_row("dense", 0.0, 2.0), _row("prune_style", 0.9, 2.5)]
    rows.append(
        Row(
            "masked_linear.forward",
            "compact",
            "mode",
            "s 2x3->4",
            "float32",
            0.9,
            0.5,
            rounds=3,
            backend="cpu",
        )
    )
    json_path = _results_json(tmp_path / "results.json", rows)
    entries = json.loads(json_path.read_text())
    entries["benchmarks"][-1]["extra_info"]["backend"] = "cpu"
    json_path.write_text(json.dumps(entries))
    report.write_report(json_path, tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert (
        "| forward | s 2x3->4 | float32 | compact (cpu) | 90.0% | 500 ms | 4.00 | 5.00 | "
        "10.0 |" in table
    )
    assert "| forward | compact (cpu) |" in table  # the summary line
    assert "## Headline" not in table


def test_headline_reads_the_two_four_rows_off_dense_in_the_same_run():
    from benchmarks import headline
    from benchmarks.shapes import LARGE_BATCH64

    large = LARGE_BATCH64.label

    def two_four(provider, kind, op, median_s, sparsity):
        return Row(
            f"masked_linear_2to4.{op}",
            provider,
            kind,
            large,
            "float16",
            sparsity,
            median_s,
            rounds=3,
        )

    rows = with_ratios(
        [
            two_four("dense", "baseline", "forward", 6e-3, 0.0),
            two_four("semi_structured", "backend", "forward", 4e-3, 0.5),
            two_four("reference", "backend", "forward", 7e-3, 0.5),  # not a headline provider
            two_four("dense", "baseline", "forward_backward", 18e-3, 0.0),
            two_four("semi_structured", "backend", "forward_backward", 20e-3, 0.5),
        ]
    )
    body = [line for line in headline.render(rows) if line.startswith("| 2:4")]
    assert body == [
        "| 2:4 forward (inference), 4096x4096 at batch 64 | float16 | 50.0% | semi_structured "
        "| 4 ms | dense | 6 ms | 1.50 |",
        "| 2:4 forward + backward, recompressing each call, 4096x4096 at batch 64 | float16 | "
        "50.0% | semi_structured | 20 ms | dense | 18 ms | 0.90 |",
    ]


def _sparseprop(op, shape, sparsity, median_s, variant="output_width", wrong=(("batch", 0.69),)):
    return Row(
        op,
        "sparseprop",
        "baseline",
        shape,
        "float32",
        sparsity,
        median_s,
        rounds=3,
        variant=variant,
        variants_correct=(variant,),
        variants_wrong=wrong,
    )


def test_rows_carry_their_ratio_to_sparseprop_at_the_same_sparsity():
    rows = with_ratios(
        [
            _row("dense", 0.0, 2.0),
            _row("reference", 0.9, 1.0),
            _row("reference", 0.5, 1.0),
            _sparseprop("masked_linear.forward", "s 2x3->4", 0.9, 3.0),
        ]
    )
    _, at_90, at_50, sparseprop = rows
    assert at_90.vs_sparseprop == 3.0
    assert at_50.vs_sparseprop is None  # no SparseProp row at that sparsity
    assert sparseprop.row_label == "sparseprop [output_width]"


def test_the_table_shows_the_sparseprop_variant_and_what_was_wrong(tmp_path):
    rows = [
        _row("dense", 0.0, 2.0),
        _row("prune_style", 0.9, 2.5),
        _sparseprop("masked_linear.forward", "s 2x3->4", 0.9, 0.5),
    ]
    json_path = _results_json(tmp_path / "results.json", rows)
    entries = json.loads(json_path.read_text())
    entries["benchmarks"][-1]["extra_info"].update(
        variant="output_width", variants_correct=["output_width"], variants_wrong={"batch": 0.69}
    )
    json_path.write_text(json.dumps(entries))
    report.write_report(json_path, tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "| vs prune-style | vs sparseprop | ideal |" in table
    assert (
        "| forward | s 2x3->4 | float32 | sparseprop [output_width] | 90.0% | 500 ms | "
        "4.00 | 5.00 | 1.00 | 10.0 |"
    ) in table
    assert "## SparseProp variants" in table
    assert (
        "| masked_linear.forward | s 2x3->4 | 90.0% | output_width | output_width | batch (0.69) |"
    ) in table


def test_headline_reads_ours_against_sparseprop_off_the_same_run():
    from benchmarks import headline
    from benchmarks.shapes import CONV6_LAYERS, LARGE_BATCH64

    large, conv = LARGE_BATCH64.label, CONV6_LAYERS[0].label
    fwd_bwd = "masked_linear.forward_backward"

    def compact(op, shape, sparsity, median_s):
        return Row(
            op, "compact", "mode", shape, "float32", sparsity, median_s, rounds=3, backend="cpu"
        )

    rows = with_ratios(
        [
            _row("dense", 0.0, 8e-3, op=fwd_bwd, shape=large),
            _sparseprop(fwd_bwd, large, 0.95, 2e-3, variant="csr", wrong=()),
            compact(fwd_bwd, large, 0.95, 1e-3),
            _row("dense", 0.0, 6e-3, op="masked_conv2d.forward_backward", shape=conv),
            _sparseprop("masked_conv2d.forward_backward", conv, 0.98, 1e-3),
            compact("masked_conv2d.forward_backward", conv, 0.98, 4e-3),
        ]
    )
    body = [
        line
        for line in headline.render(rows)
        if line.startswith("| ") and "speedup" not in line and "---" not in line
    ]
    assert body == [
        "| forward + backward, 4096x4096 at batch 64 | float32 | 95.0% | compact (cpu) | 1 ms "
        "| dense | 8 ms | 8.00 |",
        "| forward + backward, 4096x4096 at batch 64 | float32 | 95.0% | compact (cpu) | 1 ms "
        "| sparseprop [csr] | 2 ms | 2.00 |",
        f"| conv forward + backward, {conv} | float32 | 98.0% | compact (cpu) | 4 ms | dense | "
        "6 ms | 1.50 |",
        f"| conv forward + backward, {conv} | float32 | 98.0% | compact (cpu) | 4 ms | "
        "sparseprop [output_width] | 1 ms | 0.25 |",
    ]
