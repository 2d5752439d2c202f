import math
from fractions import Fraction

import pytest
import torch

from sparse_tickets.pruning import Masks, prune, prune_to_density, random_like, weights_of
from sparse_tickets.pruning.nm import (
    NMPattern,
    forced_removals,
    group_counts,
    parse_nm,
    relaxed_n,
    satisfies,
)
from tests.conftest import DEVICES
from tests.pruning.helpers import half_up, kept, one_line, small_model

# Odd shapes on purpose: rows of 7 (a partial group of 3 with m=4), a conv weight whose rows are
# C*kh*kw = 18 long, a single row, rows shorter than m, and rows that are multiples of m.
SHAPES = [(5, 7), (4, 2, 3, 3), (1, 10), (3, 2), (6, 16), (2, 8, 1, 1)]


# ---------------------------------------------------------------- plain-Python references


def reference_counts(mask, m):
    """Kept weights per group of m along each row of mask.reshape(rows, -1), by loops."""
    rows = mask.reshape(mask.shape[0], -1).tolist()
    return [[sum(row[start : start + m]) for start in range(0, len(row), m)] for row in rows]


def reference_forced(scores, mask, n_keep, m):
    """The kept weights beyond the n_keep highest of each group: lowest score first, and the
    earlier position first among equal scores."""
    rows = mask.reshape(mask.shape[0], -1).tolist()
    values = scores.reshape(scores.shape[0], -1).tolist()
    forced = [[False] * len(row) for row in rows]
    for r, row in enumerate(rows):
        for start in range(0, len(row), m):
            group = [(values[r][j], j) for j in range(start, min(start + m, len(row))) if row[j]]
            for _, j in sorted(group)[: max(0, len(group) - n_keep)]:
                forced[r][j] = True
    return torch.tensor(forced, dtype=torch.bool).reshape(mask.shape)


def reference_prune(weight, mask, removed, n, m):
    """One layer's step under the schedule, by loops: constrain to relaxed_n at the density
    after the step, then remove the rest lowest-|w|-first (earlier position first on ties)."""
    remaining = kept(mask)
    target = remaining - removed
    # ceil(target / total * m) in integers.
    n_keep = min(m, max(n, -(-target * m // mask.numel())))
    forced = reference_forced(weight.abs(), mask, n_keep, m)
    new = (mask & ~forced).reshape(-1).tolist()
    magnitudes = weight.abs().reshape(-1).tolist()
    rest = max(0, removed - int(forced.sum()))
    for _, j in sorted((magnitudes[j], j) for j in range(len(new)) if new[j])[:rest]:
        new[j] = False
    return torch.tensor(new, dtype=torch.bool).reshape(mask.shape)


def full(weights):
    return Masks({name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()})


def layers():
    return {f"l{i}.weight": torch.randn(shape) for i, shape in enumerate(SHAPES)}


# ---------------------------------------------------------------- the pattern


def test_parse_reads_n_and_m_and_str_writes_them_back():
    assert parse_nm("2:4") == NMPattern(2, 4)
    assert parse_nm(" 1:8 ") == NMPattern(1, 8)
    assert str(parse_nm("4:4")) == "4:4"
    assert str(NMPattern(3, 8)) == "3:8"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is not of the form 'n:m'"),
        ("2", "is not of the form 'n:m'"),
        ("2:3:4", "is not of the form 'n:m'"),
        ("a:b", "is not of the form 'n:m'"),
        ("-1:4", "is not of the form 'n:m'"),
        ("2.0:4", "is not of the form 'n:m'"),
        ("0:4", r"0:4 is invalid; expected 1 <= n <= m"),
        ("5:4", r"5:4 is invalid"),
        ("0:0", r"0:0 is invalid"),
    ],
)
def test_parse_refuses_malformed_text_in_one_line(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_nm(text)
    assert one_line(error)


def test_parse_refuses_non_strings():
    with pytest.raises(TypeError, match="must be a string such as '2:4'; got tuple"):
        parse_nm((2, 4))


# ---------------------------------------------------------------- counting


@pytest.mark.parametrize("shape", SHAPES + [(9,)])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8), (1, 1), (2, 3)])
def test_group_counts_and_satisfies_match_a_loop_over_groups(shape, n, m):
    for density in (0.3, 0.6, 0.9):
        mask = torch.rand(shape) < density
        expected = reference_counts(mask, m)
        counts = group_counts(mask, (n, m))
        assert counts.tolist() == expected
        assert counts.shape == (shape[0], math.ceil(math.prod(shape[1:]) / m))
        assert satisfies(mask, NMPattern(n, m)) == all(c <= n for row in expected for c in row)


def test_a_partial_trailing_group_also_keeps_at_most_n():
    row = torch.tensor([[True, False, False, False, True, True, True]])
    assert group_counts(row, (2, 4)).tolist() == [[1, 3]]
    assert not satisfies(row, (2, 4))
    assert satisfies(row, (3, 4))


def test_conv_groups_run_along_the_im2col_order():
    # Rows of C*kh*kw = 2*1*2: the first group spans both input channels.
    mask = torch.tensor([[[[True, True]], [[True, False]]]])
    assert group_counts(mask, (2, 4)).tolist() == [[3]]
    assert group_counts(mask, (1, 2)).tolist() == [[2, 1]]


def test_counts_accept_0_1_masks():
    assert group_counts(torch.tensor([[1, 0, 1, 1]]), (2, 4)).tolist() == [[3]]


# ---------------------------------------------------------------- relaxed_n


@pytest.mark.parametrize(
    "pattern, density, expected",
    [
        ((2, 4), 1.0, 4),
        ((2, 4), 0.8, 4),
        ((2, 4), 0.75, 3),
        ((2, 4), 0.64, 3),
        ((2, 4), 0.512, 3),
        ((2, 4), 0.5, 2),
        ((2, 4), 0.4096, 2),
        ((2, 4), 0.1, 2),
        ((2, 4), 0.0, 2),
        ((1, 4), 0.8, 4),
        ((1, 4), 0.5, 2),
        ((1, 4), 0.25, 1),
        ((1, 4), 0.2, 1),
        ((3, 8), 0.8, 7),
        ((3, 8), 0.625, 5),
        ((3, 8), 0.4, 4),
        ((3, 8), 0.375, 3),
        ((3, 8), 0.01, 3),
        ((4, 4), 0.1, 4),
    ],
)
def test_relaxed_n_is_max_of_n_and_the_ceiling_of_density_times_m(pattern, density, expected):
    assert relaxed_n(pattern, density) == expected
    assert relaxed_n(NMPattern(*pattern), density) == expected


def test_relaxed_n_is_exact_at_the_boundaries():
    # 0.7 * 10 is 7.000000000000001 in binary floats; read exactly it is 7.
    assert relaxed_n((1, 10), 0.7) == 7
    # 3/4 as a fraction sits on the boundary; a hair above it does not.
    assert relaxed_n((2, 4), Fraction(3, 4)) == 3
    assert relaxed_n((2, 4), Fraction(301, 400)) == 4


@pytest.mark.parametrize(
    "density, error_type",
    [
        (1.5, ValueError),
        (-0.1, ValueError),
        (math.nan, ValueError),
        ("0.5", TypeError),
        (True, TypeError),
    ],
)
def test_relaxed_n_refuses_densities_outside_0_1(density, error_type):
    with pytest.raises(error_type, match="density must be") as error:
        relaxed_n((2, 4), density)
    assert one_line(error)


# ---------------------------------------------------------------- forced removals


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_keep, m", [(2, 4), (1, 4), (3, 8), (0, 3), (4, 4)])
def test_forced_removals_match_a_loop_over_groups(shape, n_keep, m):
    # Few distinct scores, so ties are frequent.
    scores = torch.randint(0, 3, shape).float()
    mask = torch.rand(shape) < 0.8
    forced = forced_removals(scores, mask, n_keep, m)
    assert forced.dtype == torch.bool and forced.shape == mask.shape
    assert torch.equal(forced, reference_forced(scores, mask, n_keep, m))
    assert not (forced & ~mask).any()
    assert satisfies(mask & ~forced, (max(n_keep, 1), m)) or n_keep == 0


def test_forced_removals_take_the_earlier_of_equal_scores():
    forced = forced_removals(torch.ones(1, 8), torch.ones(1, 8, dtype=torch.bool), 2, 4)
    assert forced.tolist() == [[True, True, False, False, True, True, False, False]]


def test_forced_removals_skip_pruned_weights():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    mask = torch.tensor([[False, True, True, True]])
    assert forced_removals(scores, mask, 2, 4).tolist() == [[False, True, False, False]]


@pytest.mark.parametrize(
    "call, error_type, message",
    [
        (lambda s, k: forced_removals(s, k, -1, 4), ValueError, "n_keep must be at least 0"),
        (lambda s, k: forced_removals(s, k, 2, 0), ValueError, "m must be at least 1"),
        (lambda s, k: forced_removals(s, k, 2.0, 4), TypeError, "n_keep must be an int"),
        (
            lambda s, k: forced_removals(s[:, :3], k, 2, 4),
            ValueError,
            r"scores must be a tensor of the mask's shape \(2, 4\); got \(2, 3\)",
        ),
        (
            lambda s, k: forced_removals(s.masked_fill(k, math.nan), k, 2, 4),
            ValueError,
            "scores hold NaN at kept weights",
        ),
    ],
)
def test_forced_removals_refuse_bad_arguments_in_one_line(call, error_type, message):
    with pytest.raises(error_type, match=message) as error:
        call(torch.rand(2, 4), torch.ones(2, 4, dtype=torch.bool))
    assert one_line(error)


# ---------------------------------------------------------------- pruning with nm


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fraction", ["0.2", "0.5", "0.7"])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_layerwise_prune_matches_the_schedule_by_loops(shape, fraction, n, m):
    # Integer weights: ties everywhere, to pin the tie rule too.
    weights = {"w": torch.randint(-3, 4, shape).float()}
    masks = Masks({"w": torch.rand(shape) < 0.9})
    new = prune(weights, masks, float(fraction), nm=(n, m), allow_empty=True)
    removed = half_up(fraction, kept(masks["w"]))
    assert torch.equal(new["w"], reference_prune(weights["w"], masks["w"], removed, n, m))


def imp_layers():
    weights = weights_of(small_model())
    # in_features a multiple of 4, and nn.Linear's initial scale.
    weights["extra.weight"] = torch.empty(6, 16).uniform_(-0.25, 0.25)
    return weights


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_ten_levels_of_imp_tighten_the_pattern_as_density_falls(scope):
    pattern = NMPattern(2, 4)
    weights = imp_layers()
    masks = full(weights)
    reached_n = False
    for _level in range(1, 11):
        # Training moves the weights between levels; the masks must still only shrink.
        weights = {name: w + 0.01 * torch.randn_like(w) for name, w in weights.items()}
        # Ten global levels empty the layers of smallest initial scale, with or without nm.
        new = prune(weights, masks, 0.2, scope=scope, nm=pattern, allow_empty=True)
        assert new.is_subset_of(masks)
        if scope == "layerwise":
            groups = [([name], kept(masks[name])) for name in masks]
        else:
            groups = [(list(masks), masks.num_unpruned)]
        for names, remaining in groups:
            after = sum(kept(new[name]) for name in names)
            total = sum(new[name].numel() for name in names)
            scheduled = remaining - half_up("0.2", remaining)
            n_keep = relaxed_n(pattern, Fraction(scheduled, total))
            assert all(satisfies(new[name], (n_keep, 4)) for name in names)
            assert after <= scheduled
            if after < scheduled:
                # More than the step's count went: then exactly the forced removals did.
                for name in names:
                    forced = reference_forced(weights[name].abs(), masks[name], n_keep, 4)
                    assert torch.equal(new[name], masks[name] & ~forced)
            if n_keep == pattern.n:
                reached_n = True
                assert all(satisfies(new[name], pattern) for name in names)
        masks = new
    assert reached_n
    assert satisfies(masks["extra.weight"], pattern)


def test_imp_passes_through_3_of_4_before_2_of_4():
    weights = {"w": torch.randn(8, 16)}
    masks = full(weights)
    seen = []
    for _ in range(5):
        masks = prune(weights, masks, 0.2, nm=(2, 4))
        seen.append(int(group_counts(masks["w"], (2, 4)).max()))
    # Densities 0.8, 0.64, 0.512, 0.4096, 0.328.
    assert seen[0] == 4 and seen[1] == 3 and seen[2] == 3 and seen[3] <= 2 and seen[4] <= 2


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
def test_one_shot_to_n_over_m_keeps_exactly_n_of_every_group(scope, n, m):
    weights = {"fc.weight": torch.randn(6, 16), "conv.weight": torch.randn(4, 2, 2, 4)}
    new = prune_to_density(weights, full(weights), n / m, scope=scope, nm=(n, m))
    for mask in new.values():
        assert (group_counts(mask, (n, m)) == n).all()
    # Within each group the n largest magnitudes survive.
    for name, w in weights.items():
        grouped = w.abs().reshape(w.shape[0], -1, m)
        kept_mags = grouped.masked_fill(~new[name].reshape(grouped.shape), math.inf)
        gone_mags = grouped.masked_fill(new[name].reshape(grouped.shape), -math.inf)
        assert (gone_mags.amax(-1) <= kept_mags.amin(-1)).all()


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("strategy", ["magnitude", "random"])
def test_m_of_m_is_the_unconstrained_result(scope, strategy):
    weights = imp_layers()
    masks = Masks({name: torch.rand(w.shape) < 0.7 for name, w in weights.items()})
    for call, value in ((prune, 0.3), (prune_to_density, 0.2)):
        plain = call(weights, masks, value, scope=scope, strategy=strategy, seed=1)
        assert (
            call(weights, masks, value, scope=scope, strategy=strategy, seed=1, nm=(4, 4)) == plain
        )
        assert call(weights, masks, value, scope=scope, strategy=strategy, seed=1, nm=None) == plain


def test_forced_removals_beyond_the_count_remove_more_than_asked():
    # Half the groups full, half empty: density 0.5, but 2:4 allows 2 per group.
    weights = {"w": torch.randn(4, 16)}
    masks = Masks({"w": torch.tensor([True] * 4 + [False] * 4).repeat(4, 2)})
    new = prune(weights, masks, 0.1, nm=(2, 4))
    assert kept(masks["w"]) == 32 and half_up("0.1", 32) == 3
    assert kept(new["w"]) == 16  # 16 forced removals, more than the 3 asked for
    assert satisfies(new["w"], (2, 4)) and new.is_subset_of(masks)
    # prune_to_density asks for nothing here, yet the pattern is enforced.
    assert prune_to_density(weights, masks, 0.5, nm=(2, 4)) == new


def test_an_already_conforming_mask_loses_only_the_count():
    weights = {"w": torch.randn(4, 16)}
    masks = prune_to_density(weights, full(weights), 0.5, nm=(2, 4))
    new = prune(weights, masks, 0.25, nm=(2, 4))
    assert kept(new["w"]) == 32 - 8 and new.is_subset_of(masks)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_excluded_layers_keep_their_masks_with_nm(scope):
    weights = imp_layers()
    masks = full(weights)
    new = prune_to_density(weights, masks, 0.5, scope=scope, nm=(2, 4), exclude=["fc2.weight"])
    assert torch.equal(new["fc2.weight"], masks["fc2.weight"])
    included = [name for name in masks if name != "fc2.weight"]
    for names in [[name] for name in included] if scope == "layerwise" else [included]:
        total = sum(masks[name].numel() for name in names)
        n_keep = relaxed_n((2, 4), Fraction(half_up("0.5", total), total))
        assert all(satisfies(new[name], (n_keep, 4)) for name in names)
    assert satisfies(new["extra.weight"], (2, 4)) == (scope == "layerwise")


def test_allow_empty_applies_to_the_final_mask():
    weights = {"tiny": torch.randn(1, 4), "big": torch.randn(4, 16)}
    masks = Masks(
        {
            "tiny": torch.tensor([[True, False, False, False]]),
            "big": torch.ones(4, 16, dtype=torch.bool),
        }
    )
    with pytest.raises(ValueError, match="'tiny' with no weights"):
        prune(weights, masks, 0.5, nm=(2, 4))
    new = prune(weights, masks, 0.5, nm=(2, 4), allow_empty=True)
    assert not new["tiny"].any() and satisfies(new["big"], (2, 4))


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_random_strategy_with_nm_keeps_the_counts_and_the_pattern(scope):
    weights = imp_layers()
    masks = full(weights)
    by_magnitude = prune_to_density(weights, masks, 0.4, scope=scope, nm=(2, 4))
    at_random = prune_to_density(
        weights, masks, 0.4, scope=scope, nm=(2, 4), strategy="random", seed=3
    )
    assert at_random.num_unpruned == by_magnitude.num_unpruned
    if scope == "layerwise":
        assert [kept(m) for m in at_random.values()] == [kept(m) for m in by_magnitude.values()]
    assert all(satisfies(mask, (2, 4)) for mask in at_random.values())
    assert at_random != by_magnitude
    assert (
        prune_to_density(weights, masks, 0.4, scope=scope, nm=(2, 4), strategy="random", seed=3)
        == at_random
    )


def test_given_scores_rank_the_forced_removals_too():
    weights = {"w": torch.randn(2, 8)}
    scores = {"w": -weights["w"].abs()}  # keep the smallest magnitudes instead
    new = prune_to_density(weights, full(weights), 0.5, nm=(2, 4), scores=scores)
    flipped = prune_to_density({"w": 1 / weights["w"].abs()}, full(weights), 0.5, nm=(2, 4))
    assert new == flipped


@pytest.mark.parametrize("device", DEVICES)
def test_pruning_with_nm_on_a_device_matches_the_cpu(device):
    weights = imp_layers()
    masks = full(weights)
    on_cpu = prune(weights, masks, 0.6, scope="global", nm=(2, 4))
    there = prune(
        {k: w.to(device) for k, w in weights.items()},
        masks.to(device),
        0.6,
        scope="global",
        nm=(2, 4),
    )
    assert all(mask.device.type == device for mask in there.values())
    assert there.to("cpu") == on_cpu


@pytest.mark.parametrize(
    "nm, error_type, message",
    [
        (
            "2:4",
            TypeError,
            r"nm must be an NMPattern or an \(n, m\) tuple such as \(2, 4\); got str",
        ),
        ([2, 4], TypeError, "nm must be an NMPattern or an"),
        ((2, 4, 8), TypeError, "nm must be an NMPattern or an"),
        ((0, 4), ValueError, r"nm: N:M pattern 0:4 is invalid; expected 1 <= n <= m"),
        ((5, 4), ValueError, "nm: N:M pattern 5:4 is invalid"),
        ((2.0, 4), TypeError, "nm: N:M pattern n must be an int; got float"),
    ],
)
def test_bad_nm_raises_one_line_errors(nm, error_type, message):
    weights = {"w": torch.randn(2, 8)}
    for call in (
        lambda: prune(weights, full(weights), 0.2, nm=nm),
        lambda: prune_to_density(weights, full(weights), 0.5, nm=nm),
        lambda: random_like(full(weights), seed=0, nm=nm),
    ):
        with pytest.raises(error_type, match=message) as error:
            call()
        assert one_line(error)


# ---------------------------------------------------------------- random_like


def ticket():
    weights = imp_layers()
    return prune_to_density(weights, full(weights), 0.3, nm=(2, 4))


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_random_like_with_nm_keeps_counts_and_the_relaxed_pattern(n, m):
    masks = Masks(
        {
            "a": torch.rand(6, 16) < 0.3,
            "b": torch.rand(5, 7) < 0.6,
            "c": torch.rand(4, 2, 3, 3) < 0.9,
            "d": torch.rand(1, 10) < 0.5,
            "e": torch.zeros(3, 4, dtype=torch.bool),
        }
    )
    shuffled = random_like(masks, seed=0, nm=(n, m))
    assert list(shuffled) == list(masks)
    for name, mask in masks.items():
        assert shuffled[name].shape == mask.shape
        assert kept(shuffled[name]) == kept(mask)
        assert satisfies(shuffled[name], (relaxed_n((n, m), kept(mask) / mask.numel()), m))
    assert shuffled != masks


def test_random_like_with_nm_is_reproducible_per_seed():
    masks = ticket()
    first = random_like(masks, seed=5, nm=(2, 4))
    assert random_like(masks, seed=5, nm=NMPattern(2, 4)) == first
    assert random_like(masks, seed=6, nm=(2, 4)) != first
    assert all(satisfies(mask, (2, 4)) for mask in first.values())


def test_random_like_with_nm_spreads_over_all_positions_of_a_group():
    masks = Masks(
        {
            "w": prune_to_density(
                {"w": torch.randn(64, 16)}, full({"w": torch.zeros(64, 16)}), 0.5, nm=(2, 4)
            )["w"]
        }
    )
    counts = sum(
        random_like(masks, seed=seed, nm=(2, 4))["w"].reshape(-1, 4).sum(0) for seed in range(20)
    )
    # 20 draws * 256 groups * 2 kept / 4 positions = 2560 per position on average.
    assert ((counts > 2300) & (counts < 2800)).all()


def test_random_like_without_nm_is_unchanged():
    masks = ticket()
    assert random_like(masks, seed=4, nm=None) == random_like(masks, seed=4)
    generator = torch.Generator().manual_seed(4)
    for name, mask in masks.items():
        chosen = torch.randperm(mask.numel(), generator=generator)[: kept(mask)]
        expected = torch.zeros(mask.numel(), dtype=torch.bool)
        expected[chosen] = True
        assert torch.equal(random_like(masks, seed=4)[name], expected.view(mask.shape))
