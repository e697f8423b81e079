from __future__ import annotations

import pytest
import torch

from lit_papers.backbones.cifar_resnet import BasicBlock, CifarResNet, zero_pad_shortcut
from lit_papers.papers.resnet_cifar.model import ResNetCifar

# He et al. 2016, Table 6: #params of the CIFAR-10 ResNets
PAPER_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_table_6(depth):
    count = sum(p.numel() for p in ResNetCifar(depth=depth).parameters()) / 1e6
    digits = 1 if depth == 110 else 2
    assert round(count, digits) == PAPER_PARAMS_M[depth]


def test_depth_counts_weighted_layers():
    model = ResNetCifar(depth=20)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(layers) == 20  # option A adds no conv: 1 stem + 18 block convs + 1 fc


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    out = zero_pad_shortcut(x, out_channels=4, stride=2)
    assert out.shape == (1, 4, 2, 2)
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))
    assert torch.equal(out[0, 1], torch.tensor([[16.0, 18.0], [24.0, 26.0]]))
    assert out[0, 2:].abs().sum() == 0


def test_block_with_zeroed_residual_is_relu_of_shortcut():
    block = BasicBlock(2, 4, stride=2)
    torch.nn.init.zeros_(block.bn2.weight)  # residual branch outputs exactly 0
    block.eval()
    x = torch.randn(1, 2, 8, 8)
    assert torch.equal(block(x), torch.relu(zero_pad_shortcut(x, 4, 2)))


def test_feature_contract_and_bad_depth():
    net = CifarResNet(depth=20)
    feats = net(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert net.out_channels == [16, 32, 64] and net.strides == [1, 2, 4]
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=21)
