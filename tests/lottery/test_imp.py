import pytest

from sparse_tickets import models
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.imp import pruning_plan


def test_layerwise_plan_gives_each_kind_its_rate():
    plan = pruning_plan(models.create("conv2"), Hparams(model="conv2", conv_fraction=0.1))
    assert plan["scope"] == "layerwise" and plan["exclude"] == []
    assert plan["layer_fractions"] == {
        "features.0.weight": 0.1,
        "features.2.weight": 0.1,
        "hidden.1.weight": 0.2,
        "hidden.3.weight": 0.2,
        "output.weight": 0.1,
    }


def test_global_plan_pools_conv_layers_and_leaves_fc_unpruned():
    hp = Hparams(
        model="resnet20", scope="global", conv_fraction=0.2, fc_fraction=0.0, output_fraction=0.0
    )
    plan = pruning_plan(models.create("resnet20"), hp)
    assert plan["fraction"] == 0.2 and plan["layer_fractions"] == {}
    assert plan["exclude"] == ["output.weight"]


def test_global_plan_prunes_the_output_layer_on_its_own():
    plan = pruning_plan(models.create("lenet_300_100"), Hparams(scope="global"))
    assert plan["fraction"] == 0.2 and plan["layer_fractions"] == {"output.weight": 0.1}


def test_global_plan_refuses_two_pooled_rates():
    with pytest.raises(ValueError, match="global scope ranks conv and fc layers together"):
        pruning_plan(
            models.create("conv2"),
            Hparams(model="conv2", scope="global", conv_fraction=0.1, fc_fraction=0.2),
        )
