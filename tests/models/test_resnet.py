import pytest
import torch
from torch import nn

from sparse_tickets import MaskedConv2d, masked_layers
from sparse_tickets.models import BasicBlock, resnet20


def test_weight_count_follows_the_architecture_not_the_papers_274k():
    # The paper's "Resnet-18" is He et al.'s CIFAR ResNet-20, given as 274K weights. Counting
    # its prunable weights with projection shortcuts:
    #   stem 3*16*9 = 432
    #   stage 1: 6 * 16*16*9 = 13,824
    #   stage 2: 16*32*9 + 5 * 32*32*9 + shortcut 16*32 = 51,200
    #   stage 3: 32*64*9 + 5 * 64*64*9 + shortcut 32*64 = 204,800
    #   fc 64*10 = 640
    # 270,896 in all (271K). Only counting every stored value reaches 274K: adding the
    # BatchNorm weights and biases (2 * 784), their running means and variances (2 * 784) and
    # the fc bias (10) gives 274,042.
    model = resnet20()
    count = sum(layer.weight.numel() for _, layer in masked_layers(model))
    assert count == 270_896
    stored = sum(
        value.numel()
        for key, value in model.state_dict().items()
        if not key.endswith(("mask", "num_batches_tracked"))
    )
    assert stored == 274_042


def test_stages_are_three_blocks_of_16_32_64_with_projections_where_shape_changes():
    model = resnet20()
    blocks = [block for stage in model.stages for block in stage]
    assert all(isinstance(block, BasicBlock) for block in blocks)
    assert [block.conv2.out_channels for block in blocks] == [16] * 3 + [32] * 3 + [64] * 3
    assert [block.conv1.stride for block in blocks] == [(1, 1)] * 3 + [(2, 2), (1, 1), (1, 1)] * 2
    projections = [
        i for i, block in enumerate(blocks) if not isinstance(block.shortcut, nn.Identity)
    ]
    assert projections == [3, 6]
    for i in projections:
        conv, norm = blocks[i].shortcut
        assert isinstance(conv, MaskedConv2d) and isinstance(norm, nn.BatchNorm2d)
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)


def test_every_conv_is_bias_free():
    model = resnet20()
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert len(convs) == 21
    assert all(conv.bias is None for conv in convs)


def test_features_halve_twice_then_pool_globally():
    model = resnet20()
    features = model.stages(model.stem(torch.randn(2, 3, 32, 32)))
    assert features.shape == (2, 64, 8, 8)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 7, 9), (3, 1, 1)])
def test_any_image_size_gives_logits(shape):
    model = resnet20(input_shape=shape, num_classes=5)
    assert model(torch.randn(2, *shape)).shape == (2, 5)


def test_identity_block_adds_its_input():
    # With the residual branch silenced by a zero BatchNorm scale, the block is ReLU(x).
    block = BasicBlock(4, 4)
    nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(block(x), torch.relu(x))
