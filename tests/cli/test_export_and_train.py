"""`export` writes a ticket the library loads back; `train` trains once, dense or masked."""

import pytest
import torch

from sparse_tickets import files, masked_layers, models
from sparse_tickets.cli import main
from sparse_tickets.lottery.export import load_ticket
from sparse_tickets.lottery.runs import Run
from sparse_tickets.pruning import Masks
from tests.cli.conftest import SHORT


def test_export_round_trips_the_ticket(short_run, tmp_path, capsys):
    _, run_directory = short_run
    output = tmp_path / "ticket.safetensors"
    assert main(["export", str(run_directory), "--level", "2", "--output", str(output)]) == 0
    assert str(output) in capsys.readouterr().out
    level = Run.open(run_directory).level("main", 2)
    for weights, stored in (("start", level.start), ("trained", level.trained)):
        model = load_ticket(output, weights=weights)
        expected = files.read_tensors(stored)
        state = model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[name], expected[name]) for name in state)
    masks = files.read_tensors(level.masks)
    for name, layer in masked_layers(model):
        assert torch.equal(layer.mask, masks[f"{name}.weight"])
        assert (layer.weight[~layer.mask] == 0).all()


def test_export_of_an_unfinished_level_says_which_are_finished(short_run, capsys):
    _, run_directory = short_run
    assert main(["export", str(run_directory), "--level", "7"]) == 2
    assert "no finished level 7 in branch 'main'; finished levels: [0, 1, 2]" in (
        capsys.readouterr().err
    )


def test_load_ticket_rejects_other_files(tmp_path):
    path = tmp_path / "not_a_ticket.safetensors"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a ticket written by `sparse-tickets export`"):
        load_ticket(path)


@pytest.mark.parametrize("source", ["level masks", "exported ticket"])
def test_train_with_saved_masks_trains_that_sparse_network(short_run, tmp_path, source):
    _, run_directory = short_run
    masks_file = Run.open(run_directory).level("main", 2).masks
    if source == "exported ticket":
        masks_file = tmp_path / "ticket.safetensors"
        assert (
            main(["export", str(run_directory), "--level", "2", "--output", str(masks_file)]) == 0
        )
    runs = tmp_path / "runs"
    assert (
        main(["train", *SHORT, "--masks", str(masks_file), "--runs-dir", str(runs), "--no-report"])
        == 0
    )
    tmp_path = runs
    (trained_run,) = tmp_path.iterdir()
    run = Run.open(trained_run)
    assert run.hparams.levels == 0 and run.hparams.masks_sha256
    assert sorted(run.finished_levels("main")) == [0]
    expected = Run.open(run_directory).finished_levels("main")[2]["density"]
    assert run.finished_levels("main")[0]["density"] == pytest.approx(expected)


def test_train_with_masks_of_another_model_fails_before_training(short_run, tmp_path, capsys):
    _, run_directory = short_run
    masks_file = Run.open(run_directory).level("main", 1).masks
    assert (
        main(
            [
                "train",
                "--model",
                "conv2",
                "--dataset",
                "synthetic",
                "--train-size",
                "100",
                "--masks",
                str(masks_file),
                "--runs-dir",
                str(tmp_path),
                "--quiet",
                "--no-report",
            ]
        )
        == 2
    )
    assert "masks do not match the model's masked layers: missing 'features.0.weight'" in (
        capsys.readouterr().err
    )
    assert not list(tmp_path.iterdir())  # refused before any run directory was made


def test_masks_that_empty_a_layer_train_but_say_so(tmp_path, capsys):
    masks = Masks.ones_like(models.create("lenet_300_100"))
    masks = Masks(
        {
            name: mask if name != "hidden.3.weight" else torch.zeros_like(mask)
            for name, mask in masks.items()
        }
    )
    masks.save(tmp_path / "masks.safetensors")
    assert (
        main(
            [
                "train",
                "--masks",
                str(tmp_path / "masks.safetensors"),
                "--iterations",
                "2",
                "--eval-every",
                "1",
                "--train-size",
                "120",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--quiet",
                "--no-report",
            ]
        )
        == 0
    )
    said = capsys.readouterr().err.splitlines()
    assert said[0] == (
        f"sparse-tickets: note: masks file {tmp_path / 'masks.safetensors'} "
        f"keeps no weight of hidden.3.weight: that layer passes nothing on"
    )
