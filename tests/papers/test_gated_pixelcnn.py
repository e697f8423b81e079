"""Gated PixelCNN (van den Oord et al. 2016): masks by hand, causality and the blind spot by exact Jacobians on a
5x5 image, class conditioning, sampling order, bits/dim of the LightningModule, and the configs' sizes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import yaml
from torch.func import jacfwd

from lit_papers.papers.gated_pixelcnn.model import (
    GatedPixelCNN,
    PlainPixelCNN,
    channel_groups,
    context_window,
    down_shift,
    gate,
    masked_kernel,
    sample,
)
from lit_papers.papers.gated_pixelcnn.module import GatedPixelCNNLitModule, to_levels
from tests.conftest import REPO

H = W = 5
SUBPIXELS = [(i, j, c) for i in range(H) for j in range(W) for c in range(3)]  # raster, then R -> G -> B


# -- masks by hand ------------------------------------------------------------------------------------------

def test_channel_groups_are_contiguous_thirds():
    assert channel_groups(3).tolist() == [0, 1, 2]
    assert channel_groups(6).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="multiple of 3"):
        channel_groups(4)


def test_masks_type_a_and_b_by_hand():
    rgb = channel_groups(3)
    a = masked_kernel(rgb, rgb, (3, 3), (1, 1), "A")  # (out, in, 3, 3)
    b = masked_kernel(rgb, rgb, (3, 3), (1, 1), "B")
    spatial = torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]])  # rows above, left of the centre
    centre_a = torch.tensor([[0.0, 0, 0],   # R sees no channel of the current pixel
                             [1, 0, 0],     # G sees R
                             [1, 1, 0]])    # B sees R, G
    centre_b = torch.tensor([[1.0, 0, 0],   # R sees R (a feature of R, not the value: layers after the first)
                             [1, 1, 0],
                             [1, 1, 1]])
    for mask, centre in ((a, centre_a), (b, centre_b)):
        for o, i in itertools.product(range(3), range(3)):
            expected = spatial.clone()
            expected[1, 1] = centre[o, i]
            assert torch.equal(mask[o, i], expected), (o, i)
    # the horizontal stack's 1 x 2 kernel (centre = last column) from 3 image channels to 6 features, type A
    h = masked_kernel(channel_groups(6), rgb, (1, 2), (0, 1), "A")
    assert torch.equal(h[:, :, 0, 0], torch.ones(6, 3))  # the pixel to the left: everything
    assert h[:, :, 0, 1].tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="'A' or 'B'"):
        masked_kernel(rgb, rgb, (3, 3), (1, 1), "C")


def test_down_shift_and_gate_by_hand():
    x = torch.arange(6.0).view(1, 1, 3, 2)
    assert down_shift(x)[0, 0].tolist() == [[0, 0], [0, 1], [2, 3]]
    z = torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 4, 1, 1)  # f = (0.5, -1), g = (2, 0)
    expected = [math.tanh(0.5) / (1 + math.exp(-2.0)), math.tanh(-1.0) * 0.5]
    assert gate(z).flatten().tolist() == pytest.approx(expected, abs=1e-7)


# -- causality and the blind spot by exact Jacobians --------------------------------------------------------

def _random_net(cls, *, layers: int, num_classes: int = 0, seed: int = 0):
    torch.manual_seed(seed)  # PyTorch's default init: nonzero biases, no saturated gate
    return cls(channels=6, layers=layers, kernel_size=3, first_kernel_size=3, head_channels=12,
               num_classes=num_classes).double()


@pytest.fixture
def smooth_relu(monkeypatch):
    """ReLU -> softplus inside the networks, so that no unit is dead for the inputs used: the Jacobian's zero
    pattern is then the connectivity that the masks allow, nothing else. (Causality, the zeros, is also checked
    with the real ReLU, which can only add zeros.)"""
    monkeypatch.setattr(torch.nn.functional, "relu", torch.nn.functional.softplus)


def influence(net, *, inputs: int = 2, labels: torch.Tensor | None = None) -> torch.Tensor:
    """|d logits / d input| maximised over the 256 classes and over ``inputs`` random 5x5 images:
    (3, H, W, 3, H, W) = (output c, i, j, input c', i', j'). Exact (forward-mode Jacobian, float64)."""
    total = torch.zeros(3, H, W, 3, H, W, dtype=torch.float64)
    for s in range(inputs):
        x = torch.rand(1, 3, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        jac = jacfwd(lambda z: net(z, labels))(x)  # (1, 256, 3, H, W, 1, 3, H, W)
        total = torch.maximum(total, jac[0].abs().amax(dim=0)[:, :, :, 0])
    return total


NETS = {
    "gated": lambda: _random_net(GatedPixelCNN, layers=6),
    "gated_conditional": lambda: _random_net(GatedPixelCNN, layers=6, num_classes=4),
    "plain": lambda: _random_net(PlainPixelCNN, layers=6),
}


def _future_influences(infl: torch.Tensor) -> list:
    return [((c, i, j), (c2, i2, j2)) for (i, j, c), (i2, j2, c2) in itertools.product(SUBPIXELS, SUBPIXELS)
            if (i2, j2, c2) >= (i, j, c) and infl[c, i, j, c2, i2, j2] != 0]


@pytest.mark.parametrize("smooth", [False, True], ids=["relu", "softplus"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_causality_every_output_subpixel_has_zero_gradient_wrt_itself_and_everything_after(name, smooth, request):
    if smooth:
        request.getfixturevalue("smooth_relu")
    net = NETS[name]()
    labels = torch.tensor([2]) if net.num_classes else None
    infl = influence(net, labels=labels)
    assert _future_influences(infl) == [], f"{name}: (output, input) pairs that break the order"
    if smooth:  # the current pixel's earlier colours are used: G reads R, B reads R and G, at every pixel
        for i, j in itertools.product(range(H), range(W)):
            assert infl[1, i, j, 0, i, j] > 0 and infl[2, i, j, 0, i, j] > 0 and infl[2, i, j, 1, i, j] > 0


def test_causality_check_catches_a_leak():
    """The check above fails for a network that reads the current sub-pixel (mask B in the first layer)."""
    net = _random_net(PlainPixelCNN, layers=2)
    net.first.mask.copy_(masked_kernel(channel_groups(6), channel_groups(3), (3, 3), (1, 1), "B"))
    leaks = _future_influences(influence(net, inputs=1))
    assert leaks and all(out == inp for out, inp in leaks)  # each sub-pixel sees itself, nothing else leaks


def test_no_blind_spot_in_the_gated_pixelcnn(smooth_relu):
    """Every sub-pixel before (c, i, j) influences the logits at (c, i, j) (5x5, 6 layers cover the image)."""
    infl = influence(NETS["gated"]())
    unseen = [((i, j, c), (i2, j2, c2)) for (i, j, c), (i2, j2, c2) in itertools.product(SUBPIXELS, SUBPIXELS)
              if (i2, j2, c2) < (i, j, c) and infl[c, i, j, c2, i2, j2] == 0]
    assert unseen == []


def reachable_offsets(kernel: int, layers: int) -> set[tuple[int, int]]:
    """Oracle for a stack of masked k x k convolutions: the pixel offsets (di, dj) (input - output) reachable by
    ``layers`` steps, each to an open position of the kernel (rows above, or the centre row at or left of the
    centre; the centre itself only through the channel mask, so it adds no offset)."""
    r = kernel // 2
    step = {(a, b) for a in range(-r, 1) for b in range(-r, r + 1) if (a, b) <= (0, 0)}
    reach = set(step)
    for _ in range(layers - 1):
        reach = {(a + da, b + db) for a, b in reach for da, db in step}
    return reach


def test_blind_spot_present_in_the_plain_pixelcnn(smooth_relu):
    """The plain PixelCNN's influence set is exactly the oracle's reachable set: earlier pixels up and to the
    right (e.g. (i-1, j+2) for a 3x3 kernel) never influence (i, j): the blind spot of PixelRNN sec. 3.4 / Fig. 1
    of the Gated PixelCNN paper."""
    layers = 6
    infl = influence(NETS["plain"]()).amax(dim=(0, 3))  # pixel level: (i, j, i', j')
    reach = reachable_offsets(3, layers)
    blind = []
    for i, j, i2, j2 in itertools.product(range(H), range(W), range(H), range(W)):
        if (i2, j2) >= (i, j):
            continue
        expected = (i2 - i, j2 - j) in reach
        assert bool(infl[i, j, i2, j2] > 0) == expected, ((i, j), (i2, j2))
        if not expected:
            blind.append(((i, j), (i2, j2)))
    assert ((2, 1), (1, 3)) in blind  # one row up, two columns right: the classic blind spot
    assert len(blind) > 20
    # the gated network of the same depth reaches that pixel
    assert influence(NETS["gated"]())[:, 2, 1, :, 1, 3].amax() > 0


# -- class conditioning ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [GatedPixelCNN, PlainPixelCNN])
def test_class_conditional_bias_is_v_h_per_layer(cls):
    net = _random_net(cls, layers=3, num_classes=4).float()
    x = torch.rand(2, 3, H, W)
    a, b = net(x, torch.tensor([0, 0])), net(x, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)
    # with every V zero the label has no effect
    for m in net.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.weight)
    assert torch.equal(net(x, torch.tensor([0, 0])), net(x, torch.tensor([3, 3])))
    # V h with a one-hot h is column k of V: the layer's bias for class k
    lin = torch.nn.Linear(4, 6, bias=False)
    h = torch.nn.functional.one_hot(torch.tensor([2]), 4).float()
    assert torch.equal(lin(h)[0], lin.weight[:, 2])


# -- sampling -----------------------------------------------------------------------------------------------

class CountingModel(torch.nn.Module):
    """A fake autoregressive model with the networks' interface: its logits at sub-pixel t put all mass on
    (value of sub-pixel t-1 in raster/R->G->B order) + 1, so sampling in that order writes 1, 2, 3, ...;
    sampling in any other order would read a value not yet drawn (0) and break the count."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.head = self._head

    def features(self, x, labels=None):
        b, c, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(b, -1)  # (B, H*W*C) in raster, channel order
        prev = torch.cat([torch.zeros(b, 1, dtype=x.dtype), flat[:, :-1]], dim=1)
        return prev.view(b, h, w, c).permute(0, 3, 1, 2)  # feature at t = value at t-1

    def _head(self, feats):  # (B, 3, h, w) -> (B, 256, 3, h, w)
        nxt = (torch.round(feats * 255).long() + 1) % 256
        return torch.nn.functional.one_hot(nxt, 256).permute(0, 4, 1, 2, 3).to(feats.dtype) * 1e4

    def forward(self, x, labels=None):
        return self.head(self.features(x, labels))


def test_sampling_goes_in_raster_then_rgb_order():
    out = sample(CountingModel(), None, shape=(3, 4, 5), num=2)
    order = out.permute(0, 2, 3, 1).reshape(2, -1) * 255  # (N, H*W*C)
    expected = (torch.arange(60) + 1) % 256
    assert torch.equal(order.round().long(), expected.expand(2, -1))


@pytest.mark.parametrize("cls", [GatedPixelCNN, PlainPixelCNN])
@pytest.mark.parametrize("kernels", [(3, 3), (5, 3), (3, 5)])
def test_receptive_field_window_gives_the_full_image_features(cls, kernels):
    """The features at (i, j) computed on :func:`context_window` equal those of the whole image, at every pixel
    of an image larger than the receptive field (a margin one too small is caught)."""
    first, k = kernels
    torch.manual_seed(0)
    net = cls(channels=6, layers=3, kernel_size=k, first_kernel_size=first, head_channels=6, num_classes=3).double()
    x, labels = torch.rand(2, 3, 9, 11, dtype=torch.float64), torch.tensor([0, 2])
    full = net.features(x, labels)
    for i, j in itertools.product(range(9), range(11)):
        rows, cols, wi, wj = context_window(net, i, j, 9, 11)
        part = net.features(x[:, :, rows, cols], labels)[:, :, wi, wj]
        assert torch.allclose(part, full[:, :, i, j], atol=1e-12, rtol=0), (i, j)
    up, left, right = net.receptive_field
    shrunk = type("Shrunk", (), {"receptive_field": (up - 1, left - 1, right - 1)})()
    differs = False
    for i, j in itertools.product(range(9), range(11)):
        rows, cols, wi, wj = context_window(shrunk, i, j, 9, 11)
        part = net.features(x[:, :, rows, cols], labels)[:, :, wi, wj]
        differs |= not torch.allclose(part, full[:, :, i, j], atol=1e-12, rtol=0)
    assert differs


def test_sampling_shortcuts_change_no_number():
    """sample() (features on the receptive-field window, head at (i, j) only) draws the same images as the plain
    loop that runs the whole network on the whole image for every sub-pixel, from the same random stream."""
    net = _random_net(GatedPixelCNN, layers=2, num_classes=4)  # receptive field 3 rows up, 2 columns each side
    labels = torch.tensor([0, 3])
    fast = sample(net, labels, shape=(3, 6, 7), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    x = torch.zeros(2, 3, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        for i, j, c in itertools.product(range(6), range(7), range(3)):
            probs = torch.softmax(net(x, labels)[:, :, c, i, j].float(), dim=1)
            x[:, c, i, j] = torch.multinomial(probs, 1, generator=gen)[:, 0].double() / 255
    assert torch.equal(fast, x)


# -- the LightningModule: bits/dim and input checks ---------------------------------------------------------

def _module(num_classes: int = 10, conditional: bool = True) -> GatedPixelCNNLitModule:
    net = GatedPixelCNN(channels=6, layers=2, kernel_size=3, first_kernel_size=3, head_channels=6,
                        num_classes=num_classes if conditional else 0)
    return GatedPixelCNNLitModule(model=net, optimizer=lambda p: torch.optim.Adam(p), conditional=conditional,
                                  num_classes=num_classes, sample_shape=(3, 3, 3))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_uniform_model_gives_exactly_8_bits_per_dim_on_32x32_images(dtype, tol):
    module = _module().to(dtype)
    torch.nn.init.zeros_(module.model.head.logits.weight)
    torch.nn.init.zeros_(module.model.head.logits.bias)  # every softmax uniform over 256 values
    images = (torch.randint(0, 256, (4, 3, 32, 32)).float() / 255).to(dtype)
    nll, dims = module.nll((images, torch.tensor([0, 1, 2, 3])))
    assert dims == 3 * 32 * 32
    assert torch.allclose(nll.double(), torch.full((4,), 3072 * math.log(256.0), dtype=torch.float64), rtol=tol)
    module.val_bpd.update(nll, dims)
    out = module.val_bpd.compute()
    assert out["bits_per_dim"].item() == pytest.approx(8.0, abs=tol)
    assert out["n"].item() == 4 and out["ci95"].item() == pytest.approx(0.0, abs=tol)


def test_module_rejects_normalised_images():
    with pytest.raises(ValueError, match="normalization: none"):
        to_levels(torch.tensor([[[[-0.4, 0.3]]]]))
    with pytest.raises(ValueError, match="normalization: none"):
        to_levels(torch.full((1, 3, 2, 2), 0.5))  # inside [0, 1] but off the k/255 grid
    assert to_levels(torch.tensor([0.0, 1 / 255, 1.0])).tolist() == [0, 1, 255]


def test_conditional_module_needs_a_conditional_net():
    net = GatedPixelCNN(channels=6, layers=2, kernel_size=3, first_kernel_size=3, head_channels=6)
    with pytest.raises(ValueError, match="num_classes=10"):
        GatedPixelCNNLitModule(model=net, optimizer=lambda p: torch.optim.Adam(p), conditional=True)


def test_sample_images_contract():
    images, labels = _module().sample_images(12)
    assert images.shape == (12, 3, 3, 3) and labels.tolist() == [k % 10 for k in range(12)]
    assert images.min() >= 0 and images.max() <= 1 and torch.equal(images, (images * 255).round() / 255)
    images, labels = _module(conditional=False).sample_images(2)
    assert labels is None and images.shape == (2, 3, 3, 3)


# -- configs: the gated and plain recipes are of the same size ---------------------------------------------

def _build(config: str) -> torch.nn.Module:
    spec = yaml.safe_load((REPO / "configs" / "gated_pixelcnn" / config).read_text())["model"]["init_args"]["model"]
    cls = {"GatedPixelCNN": GatedPixelCNN, "PlainPixelCNN": PlainPixelCNN}[spec["class_path"].rsplit(".", 1)[1]]
    return cls(**spec["init_args"])


@pytest.mark.parametrize("pair", [("cifar_gated_cpu.yaml", "cifar_plain_cpu.yaml"),
                                  ("cifar10_gated.yaml", "cifar10_plain.yaml")])
def test_gated_and_plain_configs_have_the_same_size_and_budget(pair):
    gated, plain = (_build(c) for c in pair)
    n_gated, n_plain = (sum(p.numel() for p in m.parameters()) for m in (gated, plain))
    assert abs(n_gated - n_plain) / n_gated < 0.10, (n_gated, n_plain)
    assert len(gated.layers) == len(plain.blocks) + 1  # the same depth
    a, b = (yaml.safe_load((REPO / "configs" / "gated_pixelcnn" / c).read_text()) for c in pair)
    assert a["trainer"] == b["trainer"] and a["data"] == b["data"]
    assert a["model"]["init_args"]["optimizer"] == b["model"]["init_args"]["optimizer"]
