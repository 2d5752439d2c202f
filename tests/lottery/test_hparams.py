import pytest

from sparse_tickets.lottery.hparams import (Hparams, HparamsError, parse_step_list, parse_steps,
                                            validate)
from sparse_tickets.lottery.presets import DEFAULT_PRESET, PRESETS, preset_for


def test_steps_in_iterations_or_epochs():
    assert parse_steps("2000", 58, "iterations") == 2000
    assert parse_steps("2000it", 58, "iterations") == 2000
    assert parse_steps("160ep", 703, "iterations") == 112_480
    assert parse_step_list("120ep, 80ep", 10, "milestones") == [800, 1200]
    assert parse_step_list("", 10, "milestones") == []
    with pytest.raises(HparamsError, match="iterations is '1.5k'; expected a count"):
        parse_steps("1.5k", 10, "iterations")


def test_digest_is_stable_and_covers_every_field():
    hp = Hparams()
    assert hp.digest() == Hparams().digest()
    assert hp.run_name() == f"lenet_300_100-mnist5k-{hp.digest()}"
    assert len({hp.replace(data_seed=1).digest(), hp.replace(lr=1e-3).digest(),
                hp.replace(controls="none").digest(), hp.digest()}) == 4
    assert Hparams.from_dict(hp.as_dict()) == hp
    with pytest.raises(HparamsError, match="unknown hyperparameters colour"):
        Hparams.from_dict({**hp.as_dict(), "colour": "red"})


def test_the_default_hparams_are_the_default_preset():
    assert Hparams() == PRESETS[DEFAULT_PRESET]


@pytest.mark.parametrize("name,expected", [
    ("lenet_300_100/mnist", dict(optimizer="adam", lr=1.2e-3, batch_size=60, iterations="50000",
                                 fc_fraction=0.2, output_fraction=0.1, conv_fraction=0.0)),
    ("conv2/cifar10", dict(lr=2e-4, batch_size=60, iterations="20000", conv_fraction=0.1,
                           fc_fraction=0.2, output_fraction=0.1, scope="layerwise")),
    ("conv4/cifar10", dict(lr=3e-4, iterations="25000", conv_fraction=0.1)),
    ("conv6/cifar10", dict(lr=3e-4, iterations="30000", conv_fraction=0.15)),
    ("resnet20/cifar10", dict(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128,
                              iterations="30000", milestones="20000,25000", gamma=0.1,
                              scope="global", conv_fraction=0.2, fc_fraction=0.0,
                              output_fraction=0.0)),
    ("vgg19/cifar10", dict(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=64,
                           iterations="160ep", milestones="80ep,120ep", scope="global",
                           conv_fraction=0.2, fc_fraction=0.0, output_fraction=0.0)),
])
def test_presets_hold_the_papers_hyperparameters(name, expected):
    hp = PRESETS[name]
    assert {key: getattr(hp, key) for key in expected} == expected
    validate(hp)


def test_preset_for_a_model_and_dataset():
    assert preset_for("conv4", "cifar10") == "conv4/cifar10"
    assert preset_for("conv4", "synthetic") == "conv4/cifar10"
    assert preset_for("lenet_300_100", "synthetic") == DEFAULT_PRESET


@pytest.mark.parametrize("changes,message", [
    (dict(optimizer="rmsprop"), "optimizer is 'rmsprop'"),
    (dict(batch_size=0), "batch_size is 0"),
    (dict(conv_fraction=1.0), "conv_fraction is 1.0; expected a fraction in [0, 1)"),
    (dict(one_shot_density=0.0), "one_shot_density is 0.0"),
    (dict(scope="local"), "scope is 'local'"),
    (dict(controls="reinit,shuffle"), "unknown control shuffle"),
    (dict(control_levels="1,x"), "control_levels is '1,x'"),
    (dict(control_levels="11"), "control_levels names [11]; expected pruned levels 1..10"),
    (dict(milestones="80ep,x"), "milestones is 'x'"),
])
def test_validation_names_the_value_and_what_was_expected(changes, message):
    with pytest.raises(HparamsError) as error:
        validate(Hparams().replace(**changes))
    assert message in str(error.value)


def test_fields_added_later_keep_the_names_of_earlier_runs():
    # Names of the presets' runs as the first release wrote them, before nm, score_batches,
    # synflow_iterations and the instability fields existed.
    from sparse_tickets.lottery.presets import PRESETS
    assert PRESETS["lenet_300_100/mnist5k"].run_name() == "lenet_300_100-mnist5k-550784ce58"
    assert PRESETS["resnet20/cifar10"].run_name() == "resnet20-cifar10-815eb4f186"
    # Set, a new field does change the name.
    base = PRESETS["lenet_300_100/mnist5k"]
    names = {base.replace(**change).run_name() for change in (
        {}, {"nm": "2:4"}, {"score_batches": 2}, {"synflow_iterations": 10},
        {"instability_levels": "1"}, {"instability_iterations": "5"},
        {"instability_points": 5})}
    assert len(names) == 7


def test_a_run_written_before_the_new_fields_is_resumed(tmp_path):
    from sparse_tickets import files
    from sparse_tickets.lottery.hparams import ADDED_FIELDS
    from sparse_tickets.lottery.runs import Run
    hp = Hparams()
    directory = tmp_path / hp.run_name()
    directory.mkdir()
    old = {name: value for name, value in hp.as_dict().items() if name not in ADDED_FIELDS}
    files.write_json(directory / "hparams.json", old)
    assert Run.create(tmp_path, hp).directory == directory
    assert Run.open(directory).hparams == hp
