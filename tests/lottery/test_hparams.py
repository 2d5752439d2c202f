import pytest

from sparse_tickets.lottery.hparams import (
    MAX_ITERATIONS,
    Hparams,
    HparamsError,
    parse_step_list,
    parse_steps,
    validate,
    validate_lengths,
)
from sparse_tickets.lottery.presets import DEFAULT_PRESET, PRESETS, preset_for


def test_steps_in_iterations_or_epochs():
    assert parse_steps("2000", 58, "iterations") == 2000
    assert parse_steps("2000it", 58, "iterations") == 2000
    assert parse_steps("160ep", 703, "iterations") == 112_480
    assert parse_step_list("120ep, 80ep", 10, "milestones") == [800, 1200]
    assert parse_step_list("", 10, "milestones") == []
    with pytest.raises(HparamsError, match="iterations is '1.5k'; expected a count"):
        parse_steps("1.5k", 10, "iterations")


@pytest.mark.parametrize(
    "text, per_epoch, message",
    [
        (
            "99999999999999999999",
            1,
            "iterations is '99999999999999999999'; expected at most 1,000,000,000 iterations",
        ),
        # Within the bound as a count, past it once epochs are iterations.
        ("20000000ep", 58, "iterations is '20000000ep' (1160000000 iterations); expected at most"),
        ("\u0661\u0660", 1, "expected a count of iterations"),  # digits of another script
    ],
)
def test_lengths_past_the_bound_or_not_ascii_are_refused(text, per_epoch, message):
    with pytest.raises(HparamsError) as error:
        parse_steps(text, per_epoch, "iterations")
    assert message in str(error.value)
    assert parse_steps(str(MAX_ITERATIONS), 1, "iterations") == MAX_ITERATIONS


@pytest.mark.parametrize(
    "name, spellings, canonical",
    [
        ("iterations", ["10ep", "10 ep", " 10ep", "0010ep", "10ep\t", " 0010 ep "], "10ep"),
        ("iterations", ["2000", "2000it", " 2000 it", "02000", "2000 "], "2000"),
        ("warmup", ["0", "0ep", "000", "0it", " 0 "], "0"),
        ("rewind_iteration", ["5", "5it", "005", "5 it"], "5"),
        ("milestones", ["80ep,120ep", " 80ep , 120 ep", "080ep,120ep,"], "80ep,120ep"),
        ("milestones", ["", " ", ","], ""),
        ("instability_iterations", ["0,100", "100,0", "0ep, 100it, 0", "100 , 0"], "0,100"),
        ("instability_iterations", ["2ep,100", "100, 02ep"], "100,2ep"),
        (
            "controls",
            ["reinit,random_pruning", "random_pruning,reinit", " reinit , reinit,random_pruning"],
            "reinit,random_pruning",
        ),
        ("controls", ["none", " none "], "none"),
        ("control_levels", ["1,2", "2,1", " 01 , 2,2"], "1,2"),
        ("instability_levels", ["0,5,10", "10,5,0", "00,5,10,"], "0,5,10"),
        ("nm", ["2:4", " 2:4 ", "02:04"], "2:4"),
    ],
)
def test_equal_settings_are_kept_in_one_spelling_and_hash_equal(name, spellings, canonical):
    settings = [Hparams().replace(**{name: text}) for text in spellings]
    assert {getattr(hp, name) for hp in settings} == {canonical}
    assert len({hp.run_name() for hp in settings}) == 1
    # A stored hparams.json of another spelling loads as the same settings, so it is resumed.
    stored = {**Hparams().as_dict(), name: spellings[-1]}
    assert Hparams.from_dict(stored) == settings[0]


def test_a_value_that_does_not_parse_is_kept_for_validate_to_name():
    hp = Hparams(iterations=" 12x", controls="reinit,shuffle", control_levels="1,x", nm="2:4:8")
    assert (hp.iterations, hp.controls, hp.control_levels, hp.nm) == (
        " 12x",
        "reinit,shuffle",
        "1,x",
        "2:4:8",
    )
    with pytest.raises(HparamsError, match="iterations is ' 12x'"):
        validate(hp)


# Run names written before lengths and lists were kept in one spelling: settings already in
# that spelling keep their directory.
@pytest.mark.parametrize(
    "changes, name",
    [
        ({}, "lenet_300_100-mnist5k-550784ce58"),
        (dict(iterations="60"), "lenet_300_100-mnist5k-8da7c711fb"),
        (dict(iterations="10ep"), "lenet_300_100-mnist5k-1300a79306"),
        (dict(warmup="2ep"), "lenet_300_100-mnist5k-e909e16eb4"),
        (dict(iterations="60", milestones="20,40"), "lenet_300_100-mnist5k-ec4fefe06c"),
        (dict(iterations="160ep", milestones="80ep,120ep"), "lenet_300_100-mnist5k-d473d6edd5"),
        (dict(rewind="lr", rewind_iteration="1ep"), "lenet_300_100-mnist5k-7b7bf118e1"),
        (dict(nm="2:4"), "lenet_300_100-mnist5k-5b37c0b01e"),
        (dict(controls="reinit,random_pruning"), "lenet_300_100-mnist5k-e18de5f1dc"),
        (dict(controls="none"), "lenet_300_100-mnist5k-e3d14739d4"),
        (dict(control_levels="1,2"), "lenet_300_100-mnist5k-193632b1d7"),
        (
            dict(instability_levels="0,1", instability_iterations="0,100"),
            "lenet_300_100-mnist5k-3c370ccdea",
        ),
    ],
)
def test_settings_already_in_their_one_spelling_keep_their_run_name(changes, name):
    # The names directories were made with (every field hashed): found and resumed.
    assert Hparams().replace(**changes).legacy_run_name() == name


@pytest.mark.parametrize(
    "preset, name",
    [
        ("lenet_300_100/mnist", "lenet_300_100-mnist-ca7b9567f4"),
        ("conv2/cifar10", "conv2-cifar10-744c717fdd"),
        ("conv4/cifar10", "conv4-cifar10-0e5a43bfa9"),
        ("conv6/cifar10", "conv6-cifar10-bbcb309bf6"),
        ("vgg19/cifar10", "vgg19-cifar10-230094b9b9"),
    ],
)
def test_presets_keep_their_run_names(preset, name):
    assert PRESETS[preset].legacy_run_name() == name


def test_digest_is_stable_and_covers_every_field():
    hp = Hparams()
    assert hp.digest() == Hparams().digest()
    assert hp.run_name() == f"lenet_300_100-mnist5k-{hp.digest()}"
    assert (
        len(
            {
                hp.replace(data_seed=1).digest(),
                hp.replace(lr=1e-3).digest(),
                hp.replace(control_seed=2).digest(),
                hp.digest(),
            }
        )
        == 4
    )
    assert Hparams.from_dict(hp.as_dict()) == hp
    with pytest.raises(HparamsError, match="unknown hyperparameters colour"):
        Hparams.from_dict({**hp.as_dict(), "colour": "red"})


def test_the_default_hparams_are_the_default_preset():
    assert Hparams() == PRESETS[DEFAULT_PRESET]


@pytest.mark.parametrize(
    "name,expected",
    [
        (
            "lenet_300_100/mnist",
            dict(
                optimizer="adam",
                lr=1.2e-3,
                batch_size=60,
                iterations="50000",
                fc_fraction=0.2,
                output_fraction=0.1,
                conv_fraction=0.0,
            ),
        ),
        (
            "conv2/cifar10",
            dict(
                lr=2e-4,
                batch_size=60,
                iterations="20000",
                conv_fraction=0.1,
                fc_fraction=0.2,
                output_fraction=0.1,
                scope="layerwise",
            ),
        ),
        ("conv4/cifar10", dict(lr=3e-4, iterations="25000", conv_fraction=0.1)),
        ("conv6/cifar10", dict(lr=3e-4, iterations="30000", conv_fraction=0.15)),
        (
            "resnet20/cifar10",
            dict(
                optimizer="sgd",
                lr=0.1,
                momentum=0.9,
                batch_size=128,
                iterations="30000",
                milestones="20000,25000",
                gamma=0.1,
                scope="global",
                conv_fraction=0.2,
                fc_fraction=0.0,
                output_fraction=0.0,
            ),
        ),
        (
            "vgg19/cifar10",
            dict(
                optimizer="sgd",
                lr=0.1,
                momentum=0.9,
                batch_size=64,
                iterations="160ep",
                milestones="80ep,120ep",
                scope="global",
                conv_fraction=0.2,
                fc_fraction=0.0,
                output_fraction=0.0,
            ),
        ),
    ],
)
def test_presets_hold_the_papers_hyperparameters(name, expected):
    hp = PRESETS[name]
    assert {key: getattr(hp, key) for key in expected} == expected
    validate(hp)


def test_preset_for_a_model_and_dataset():
    assert preset_for("conv4", "cifar10") == "conv4/cifar10"
    assert preset_for("conv4", "synthetic") == "conv4/cifar10"
    assert preset_for("lenet_300_100", "synthetic") == DEFAULT_PRESET


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(optimizer="rmsprop"), "optimizer is 'rmsprop'"),
        (dict(batch_size=0), "batch_size is 0"),
        (dict(conv_fraction=1.0), "conv_fraction is 1.0; expected a fraction in [0, 1)"),
        (dict(one_shot_density=0.0), "one_shot_density is 0.0"),
        (dict(scope="local"), "scope is 'local'"),
        (dict(controls="reinit,shuffle"), "unknown control shuffle"),
        (dict(control_levels="1,x"), "control_levels is '1,x'"),
        (dict(control_levels="11"), "control_levels names [11]; expected pruned levels 1..10"),
        (dict(milestones="80ep,x"), "milestones is 'x'"),
        (dict(iterations="99999999999999999999"), "expected at most 1,000,000,000 iterations"),
        (dict(warmup="1000000001"), "warmup is '1000000001'; expected at most 1,000,000,000"),
        (dict(levels=10**20), "levels is 100000000000000000000; expected 0 to 1000"),
        (dict(eval_every=10**20), "eval_every is 100000000000000000000; expected 1 to "),
        (dict(score_batches=10**20), "score_batches is 100000000000000000000; expected 1 to "),
        (dict(synflow_iterations=0), "synflow_iterations is 0; expected 1 to 1,000,000,000"),
        (
            dict(instability_points=1001),
            "instability_points is 1001; expected 2 (the two ends) to 1000",
        ),
        (dict(optimizer="sgd", momentum=1.0), "momentum is 1.0; expected a momentum in [0, 1)"),
        (dict(lr=float("nan")), "lr is nan; expected a finite number"),
        (dict(gamma=float("inf")), "gamma is inf; expected a finite number"),
        (
            dict(controls=""),
            "controls is ''; expected reinit, random_pruning (comma-separated) or none",
        ),
        (dict(controls=" , "), "controls is ''; expected reinit"),  # the one spelling of no names
        (dict(controls="none,reinit"), "controls is 'none,reinit'; expected none alone"),
    ],
)
def test_validation_names_the_value_and_what_was_expected(changes, message):
    with pytest.raises(HparamsError) as error:
        validate(Hparams().replace(**changes))
    assert message in str(error.value)


def test_fields_added_later_keep_the_names_of_earlier_runs():
    # Names of the presets' runs as the first release wrote them, before nm, score_batches,
    # synflow_iterations and the instability fields existed.
    from sparse_tickets.lottery.presets import PRESETS

    assert PRESETS["lenet_300_100/mnist5k"].legacy_run_name() == "lenet_300_100-mnist5k-550784ce58"
    assert PRESETS["resnet20/cifar10"].legacy_run_name() == "resnet20-cifar10-815eb4f186"
    # Set, a new field does change the name.
    base = PRESETS["lenet_300_100/mnist5k"]
    names = {
        base.replace(**change).legacy_run_name()
        for change in (
            {},
            {"nm": "2:4"},
            {"score_batches": 2},
            {"synflow_iterations": 10},
            {"instability_levels": "1"},
            {"instability_iterations": "5"},
            {"instability_points": 5},
        )
    }
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


@pytest.mark.parametrize(
    "changes, per_epoch, message",
    [
        (
            dict(warmup="1001"),
            1,
            "warmup is '1001'; expected at most the 1000 iterations of training",
        ),
        (
            dict(iterations="10ep", warmup="11ep"),
            58,
            "warmup is '11ep' (638 iterations); expected at most the 580 iterations",
        ),
        (
            dict(milestones="500,1000"),
            1,
            "milestones '500,1000' has 1000; expected milestones after "
            "iteration 0 and before the end of training at 1000",
        ),
        (dict(milestones="0,500"), 1, "milestones '0,500' has 0; expected milestones after"),
        (
            dict(iterations="10ep", milestones="5ep,12ep"),
            58,
            "milestones '5ep,12ep' (290, 696 iterations) has 696; expected",
        ),
        (
            dict(milestones="800,500"),
            1,
            "milestones '800,500' are not increasing; expected each after the one before",
        ),
        (dict(milestones="500,500"), 1, "milestones '500,500' are not increasing"),
        # In order as written, out of order once an epoch is 58 iterations.
        (
            dict(milestones="100,1ep"),
            58,
            "milestones '100,1ep' (100, 58 iterations) are not increasing",
        ),
        (
            dict(strategy="snip", one_shot_density=0.1, score_batches=59),
            58,
            "score_batches is 59; expected at most the 58 batches of one epoch",
        ),
    ],
)
def test_lengths_that_do_not_fit_the_run_are_refused(changes, per_epoch, message):
    hp = Hparams().replace(**changes)
    validate(hp)  # each value is fine on its own
    with pytest.raises(HparamsError) as error:
        validate_lengths(hp, per_epoch)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        dict(warmup="1000"),
        dict(milestones="1,999"),
        dict(milestones="80ep,120ep", iterations="160ep"),
        dict(strategy="snip", one_shot_density=0.1, score_batches=58),
        dict(score_batches=59),  # magnitude pruning scores with no batches
    ],
)
def test_lengths_that_fit_the_run_pass(changes):
    validate_lengths(Hparams().replace(**changes), 58)


@pytest.mark.parametrize(
    "changes",
    [
        dict(controls="none"),
        dict(controls="reinit,random_pruning"),
        dict(control_levels="1,2"),
        dict(instability_levels="0,1", instability_iterations="0,100"),
        dict(instability_points=5),
    ],
)
def test_the_branches_beside_the_main_one_are_not_in_the_run_name(changes):
    # Adding a control or an instability analysis to a finished run reuses its ticket levels.
    hp = Hparams()
    assert hp.replace(**changes).run_name() == hp.run_name()
    assert hp.replace(**changes).legacy_run_name() != hp.legacy_run_name()
    assert hp.replace(**changes).main_branch() == hp.main_branch()


def test_the_run_name_of_the_default_run_is_pinned():
    # A change here renames every run directory: keep it, or find the old names as
    # legacy_run_name does.
    assert Hparams().run_name() == "lenet_300_100-mnist5k-a4a6b38838"
