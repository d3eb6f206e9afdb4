"""torch-pruning on the custom leaves (SubPixelBlock, SelfAttention), affine InstanceNorm and
depthwise convs: pruning channels that are exactly zero must not change the output, and every
group of each generator must be prunable."""
import pytest
import torch
import torch_pruning as tp
from torch import nn

from gancompress.method.layer_pruners import CUSTOM_PRUNERS, CUSTOM_ROOT_TYPES
from gancompress.nets.resnet import MobileResnetGenerator, ResnetGenerator
from gancompress.nets.sagan import SAGANGenerator, restore_spectral_norm, strip_spectral_norm
from gancompress.nets.srresnet import SRResNet, SubPixelBlock

ROOTS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, *CUSTOM_ROOT_TYPES)
IDXS = [1, 4, 6]


def _graph(model, x):
    return tp.DependencyGraph().build_dependency(model, example_inputs=x,
                                                 customized_pruners=CUSTOM_PRUNERS)


def _group_of(DG, module, idxs):
    pruner = DG.get_pruner_of_module(module)
    return DG.get_pruning_group(module, pruner.prune_out_channels, idxs=idxs)


def _zero_(*tensors_and_idxs):
    with torch.no_grad():
        for t, idxs in tensors_and_idxs:
            t[idxs] = 0


def _randomise_norms(model):
    """Give every affine norm non-trivial scales and shifts so that zeroing some matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def test_subpixel_prune_out_channels_keeps_function():
    torch.manual_seed(0)
    g = SRResNet(scale=4, ngf=8, n_blocks=2).eval()
    _randomise_norms(g)
    sp = g.upsample[0]
    with torch.no_grad():
        sp.prelu.weight.uniform_(0.1, 0.3)
    filters = [c * 4 + k for c in IDXS for k in range(4)]
    _zero_((sp.conv.weight, filters), (sp.conv.bias, filters))
    x = torch.randn(1, 3, 8, 8)
    y0 = g(x)
    kept_prelu = sp.prelu.weight[[i for i in range(8) if i not in IDXS]].clone()
    _group_of(_graph(g, x), sp, IDXS).prune()
    assert sp.conv.out_channels == 4 * 5 and sp.conv.bias.shape == (20,)
    assert sp.prelu.num_parameters == 5 and torch.equal(sp.prelu.weight, kept_prelu)
    assert g.upsample[1].conv.in_channels == 5
    torch.testing.assert_close(g(x), y0, rtol=0, atol=1e-5)


def test_subpixel_prune_in_channels_keeps_function():
    torch.manual_seed(0)
    g = SRResNet(scale=2, ngf=8, n_blocks=2).eval()
    _randomise_norms(g)
    # make trunk channels IDXS exactly zero: the head conv and every BN added onto the trunk
    _zero_((g.head[0].weight, IDXS), (g.head[0].bias, IDXS))
    for bn in [b.conv2[1] for b in g.blocks] + [g.body_out[1]]:
        _zero_((bn.weight, IDXS), (bn.bias, IDXS))
    x = torch.randn(1, 3, 8, 8)
    y0 = g(x)
    _group_of(_graph(g, x), g.head[0], IDXS).prune()
    assert g.upsample[0].conv.in_channels == 5
    assert g.upsample[0].conv.out_channels == 32  # its own output channels are untouched
    assert all(b.conv1[0].in_channels == 5 and b.conv2[0].out_channels == 5 for b in g.blocks)
    torch.testing.assert_close(g(x), y0, rtol=0, atol=1e-5)


def test_subpixel_channel_scores():
    sp = SubPixelBlock(4, 6, scale=2)
    with torch.no_grad():
        sp.conv.weight.fill_(1.0)
        sp.conv.weight[8:12] = 3.0  # channel 2's four filters
    scores = sp.channel_scores("l1")
    assert scores.shape == (6,)
    assert scores[2] == 3.0 and scores[0] == 1.0
    with pytest.raises(ValueError):
        sp.channel_scores("slimming")


def test_self_attention_prune_keeps_function():
    torch.manual_seed(0)
    g = SAGANGenerator(z_dim=16, ngf=8)
    strip_spectral_norm(g)
    g.eval()
    _randomise_norms(g)
    attn = g.attn1
    with torch.no_grad():
        attn.gamma.fill_(0.7)
    # l3's channels IDXS output 0 after BN+ReLU, and attn1's value conv adds 0 to them
    _zero_((g.l3[1].weight, IDXS), (g.l3[1].bias, IDXS),
           (attn.value_conv.weight, IDXS), (attn.value_conv.bias, IDXS))
    z = torch.randn(2, 16)
    y0 = g(z)
    group = _group_of(_graph(g, z), g.l3[0], IDXS)
    assert any(dep.target.module is attn for dep, _ in group)
    group.prune()
    assert attn.value_conv.in_channels == attn.value_conv.out_channels == 13
    assert attn.query_conv.in_channels == attn.key_conv.in_channels == 13
    assert attn.query_conv.out_channels == 2  # the inner width is not pruned
    assert g.l4[0].in_channels == 13
    torch.testing.assert_close(g(z), y0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_torch_pruning_prunes_affine_instance_norm(batch):
    """torch-pruning 1.6.1 handles InstanceNorm(affine=True) itself (no custom pruner)."""
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=8, n_blocks=1, norm="instance_affine").eval()
    _randomise_norms(g)
    stem_conv, stem_norm = g.model[1], g.model[2]
    _zero_((stem_norm.weight, IDXS), (stem_norm.bias, IDXS))
    x = torch.randn(batch, 3, 32, 32)
    y0 = g(x)
    kept = [i for i in range(8) if i not in IDXS]
    kept_w, kept_b = stem_norm.weight[kept].clone(), stem_norm.bias[kept].clone()
    _group_of(_graph(g, x), stem_conv, IDXS).prune()
    assert stem_norm.num_features == 5
    assert torch.equal(stem_norm.weight, kept_w) and torch.equal(stem_norm.bias, kept_b)
    torch.testing.assert_close(g(x), y0, rtol=0, atol=1e-5)


def test_depthwise_trunk_prune_keeps_function():
    """The mobile blocks' depthwise convs lose the same channels as the trunk that feeds them."""
    torch.manual_seed(0)
    g = MobileResnetGenerator(ngf=4, n_blocks=2, norm="instance").eval()
    down2 = g.model[7]
    _zero_((down2.weight, IDXS), (down2.bias, IDXS))
    for block in g.residual_blocks():
        pw = block.conv_block[-2].conv[2]  # the pointwise conv that writes onto the trunk
        _zero_((pw.weight, IDXS), (pw.bias, IDXS))
    x = torch.randn(1, 3, 32, 32)
    y0 = g(x)
    _group_of(_graph(g, x), down2, IDXS).prune()
    for block in g.residual_blocks():
        dw = block.conv_block[1].conv[0]
        assert dw.in_channels == dw.out_channels == dw.groups == 13
    torch.testing.assert_close(g(x), y0, rtol=0, atol=1e-5)


def _widths(model):
    return {m: (m.in_channels, m.out_channels) for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}


def _prune_every_group_by_half(model, x, out_conv):
    DG = _graph(model, x)
    groups = list(DG.get_all_groups(ignored_layers=[out_conv], root_module_types=ROOTS))
    assert groups
    for group in groups:
        root = group[0].dep.target.module
        group.prune(list(range(DG.get_out_channels(root) // 2)))
    return len(groups)


def test_sagan_generator_every_group_prunes():
    torch.manual_seed(0)
    g = SAGANGenerator(z_dim=16, ngf=8)
    stripped = strip_spectral_norm(g)
    g.eval()
    z = torch.randn(2, 16)
    before = _widths(g)
    assert _prune_every_group_by_half(g, z, g.output_conv()) == 4
    assert g(z).shape == (2, 3, 64, 64)
    for conv, (_, c_out) in before.items():
        if conv is g.output_conv():
            continue
        if conv in (g.attn1.query_conv, g.attn1.key_conv, g.attn2.query_conv, g.attn2.key_conv):
            assert conv.in_channels == before[conv][0] // 2 and conv.out_channels == c_out
        else:
            assert conv.out_channels == c_out // 2
    assert g.attn1.value_conv.out_channels == 8 and g.attn2.value_conv.out_channels == 4
    assert g.output_conv().in_channels == 4
    # spectral norm goes back onto the pruned convs, normalised to sigma 1 again
    restore_spectral_norm(stripped)
    assert g.train()(z).shape == (2, 3, 64, 64)
    for conv in stripped:
        w = conv.weight.detach().transpose(0, 1).flatten(1)  # torch's SN matrix for a convT
        assert torch.linalg.matrix_norm(w, 2) == pytest.approx(1.0, abs=1e-3)


def test_srresnet_every_group_prunes():
    g = SRResNet(scale=4, ngf=8, n_blocks=2).eval()
    x = torch.randn(1, 3, 8, 8)
    before = _widths(g)
    _prune_every_group_by_half(g, x, g.output_conv())
    assert g(x).shape == (1, 3, 32, 32)
    for conv, (_, c_out) in before.items():
        if conv is not g.output_conv():
            assert conv.out_channels == c_out // 2
    for sp in g.upsample:
        assert sp.conv.in_channels == 4 and sp.prelu.num_parameters == 4


def test_mobile_resnet_every_group_prunes():
    g = MobileResnetGenerator(ngf=8, n_blocks=2).eval()
    x = torch.randn(1, 3, 32, 32)
    before = _widths(g)
    _prune_every_group_by_half(g, x, g.output_conv())
    assert g(x).shape == x.shape
    for conv, (_, c_out) in before.items():
        if conv is not g.output_conv():
            assert conv.out_channels == c_out // 2
        if conv.groups > 1:
            assert conv.groups == conv.in_channels == conv.out_channels
