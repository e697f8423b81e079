"""SPP-net detection (He et al. 2014, sec. 4): the pooled region features equal the pyramid over the box's window of
the one conv5 map (oracle: :func:`spp_over_boxes` on a map computed by hand, itself tested vs a slow loop in
tests/layers), the map is computed once per image, the resize rule, the fc-only fine-tuning switch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.layers.spp import spatial_pyramid_pool, spp_over_boxes
from lit_papers.papers.rcnn.model import ConvNet
from lit_papers.papers.spp_net.model import SPPNet


class CountingBody(nn.Module):
    """A conv body that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ConvNet(widths=(4, 8))
        self.out_channels, self.strides, self.calls = self.inner.out_channels, self.inner.strides, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def _net(**kw) -> SPPNet:
    torch.manual_seed(0)
    return SPPNet(backbone=CountingBody(), num_classes=3, levels=(1, 2, 3), fc_dim=10, dropout=0.0, **kw).eval()


def test_region_features_are_the_pyramid_over_the_box_window_of_one_conv5_map():
    net = _net(image_scale=2.0)
    image = torch.rand(3, 30, 40)
    boxes = torch.tensor([[0.0, 0, 12, 12], [4, 6, 38, 29], [20, 10, 22, 13]])
    with torch.no_grad():
        out = net(image, boxes)
        x = F.interpolate(((image - net.mean) / net.std)[None], scale_factor=2.0, mode="bilinear",
                          align_corners=False)
        conv5 = net.backbone.inner(x)["conv5"]  # (1, 8, 30, 40) at stride 2 of the 60 x 80 input
        expected = spp_over_boxes(conv5, [boxes * 2.0], (1, 2, 3), spatial_scale=0.5)
        # box 1 by hand: (4, 6)-(38, 29) -> x 8..76, y 12..58 on the input -> cells x [4, 38), y [6, 29)
        torch.testing.assert_close(expected[1], spatial_pyramid_pool(conv5[:, :, 6:29, 4:38], (1, 2, 3))[0])
    assert out["pool5"].shape == (3, 8 * (1 + 4 + 9)) and out["logits"].shape == (3, 4)
    torch.testing.assert_close(out["pool5"], expected)


def test_conv5_is_computed_once_per_image_across_proposal_chunks():
    net = _net(image_scale=1.0)
    image, boxes = torch.rand(3, 24, 24), torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]).repeat(10, 1)
    with torch.no_grad():
        whole = net(image, boxes)["fc7"]
        chunks = torch.cat([net(image, boxes[i: i + 3])["fc7"] for i in range(0, 20, 3)])
    assert net.backbone.calls == 1  # one map for 1 + 7 calls on the same image
    torch.testing.assert_close(chunks, whole)
    with torch.no_grad():
        net(torch.rand(3, 24, 24), boxes)
    assert net.backbone.calls == 2  # a new image, a new map
    net(image, boxes).get("logits").sum().backward()  # with gradients: no cached (detached) map is reused
    assert net.backbone.calls == 3 and net.backbone.inner.body[0].weight.grad is not None


def test_single_scale_resize_rule():
    net = _net(scale=688)
    assert net.resize_factor(375, 500) == 688 / 375  # shorter side to 688 (sec. 4.1)
    assert _net(image_scale=2.0).resize_factor(375, 500) == 2.0


def test_freeze_backbone_fine_tunes_only_the_fully_connected_layers():
    from lit_papers.papers.spp_net.module import SPPNetLitModule

    module = SPPNetLitModule(model=_net(image_scale=1.0), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                             num_classes=3, freeze_backbone=True)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for n, p in module.model.named_parameters() if not n.startswith("backbone.")}
    assert not any(p.requires_grad for p in module.model.backbone.parameters())
