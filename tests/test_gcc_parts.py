import math

import torch

from gancompress.method import coordination, losses
from gancompress.method.discriminators.selective import SelectiveDiscriminator, straight_through_mask
from gancompress.nets.patchgan import PatchDiscriminator


def test_gram_and_texture_known_values():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # N=1, C=2, H=1, W=2
    g = losses.gram(f)
    # f f^T = [[1+4, 3+8], [3+8, 9+16]] divided by C*H*W = 4
    assert torch.allclose(g, torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)
    zero = torch.zeros_like(f)
    # rmse(Gram(f), 0) = sqrt(mean([1.25, 2.75, 2.75, 6.25]^2))
    expected = math.sqrt((1.25 ** 2 + 2 * 2.75 ** 2 + 6.25 ** 2) / 4)
    assert abs(losses.texture_loss([f], [zero]).item() - expected) < 1e-5
    assert abs(losses.content_loss([f], [zero]).item() - math.sqrt(30 / 4)) < 1e-5


def test_gan_losses_and_gap():
    logits = torch.tensor([0.5, -1.0])
    assert abs(losses.d_fake("hinge", logits).item() - (1.5 + 0.0) / 2) < 1e-6
    assert abs(losses.g_adv("hinge", logits).item() - 0.25) < 1e-6
    assert abs(coordination.gap("hinge", logits).item() - abs(0.25 - 0.75)) < 1e-6
    assert abs(losses.d_real("lsgan", torch.ones(3)).item()) < 1e-9


def test_ema_target_matches_hand_computation():
    ema = coordination.EmaTarget()
    total = 4
    gaps = [2.0, 1.0, 3.0, 0.5]
    hand = None
    for epoch, g in enumerate(gaps):
        beta = coordination.ema_beta(epoch, total)
        value = ema.update(torch.tensor(g), beta).item()
        hand = g if hand is None else beta * hand + (1 - beta) * g
        assert abs(value - hand) < 1e-6
    # beta = 0, 1/4, 2/4, 3/4: 2 -> 0.25*2+0.75*1=1.25 -> 0.5*1.25+0.5*3=2.125 -> 0.75*2.125+0.25*0.5
    assert abs(hand - (0.75 * 2.125 + 0.25 * 0.5)) < 1e-9


def test_alpha_lr_decays_every_n_epochs():
    assert coordination.alpha_lr_at(1e-4, 99, 100, 0.1) == 1e-4
    assert abs(coordination.alpha_lr_at(1e-4, 100, 100, 0.1) - 1e-5) < 1e-12


def test_mask_is_hard_forward_straight_through_backward():
    alpha = torch.tensor([0.9, 0.2, 0.6], requires_grad=True)
    m = straight_through_mask(alpha, 0.5)
    assert m.tolist() == [1.0, 0.0, 1.0]
    (m * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert alpha.grad.tolist() == [1.0, 2.0, 3.0]  # as if m = alpha


def _selective(tau=0.5):
    torch.manual_seed(0)
    net = PatchDiscriminator(6, ndf=4, n_layers=3, norm="batch")
    return SelectiveDiscriminator(net, net.mask_points(), tau)


def test_alpha_gets_gradient_and_switched_off_channel_can_switch_back():
    d = _selective()
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        d.alphas[0][0] = 0.3  # below tau: switched off
    out_off = d(x)
    # the switched-off channel contributes nothing: changing its filter leaves the output alone
    with torch.no_grad():
        d.net.blocks[0][0].weight[0].mul_(5.0)
    assert torch.allclose(d(x), out_off)
    # ...but its alpha still receives a gradient
    loss = d(x).mean()
    grads = torch.autograd.grad(loss, list(d.alphas))
    assert grads[0][0].abs() > 0
    # a step in the direction that raises alpha above tau switches it back on
    opt = torch.optim.SGD(d.alpha_parameters(), lr=1.0)
    d.alphas[0].grad = torch.zeros_like(d.alphas[0])
    d.alphas[0].grad[0] = -1.0
    opt.step()
    assert d.active_fraction()[0].item() == 1.0


def test_tau_takes_effect_and_alphas_are_not_weights():
    d = _selective(tau=0.1)
    with torch.no_grad():
        d.alphas[1].fill_(0.2)
    assert d.active_fraction()[1].item() == 1.0  # 0.2 > 0.1
    d.tau = 0.5
    assert d.active_fraction()[1].item() == 0.0
    ids = {id(p) for p in d.weight_parameters()}
    assert not any(id(a) in ids for a in d.alpha_parameters())
    with torch.no_grad():
        d.alphas[0].fill_(1.7)
    d.clip_alphas()
    assert d.alphas[0].max().item() == 1.0
