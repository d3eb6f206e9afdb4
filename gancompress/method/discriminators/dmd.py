"""DMD: the dynamically masked discriminator (METHOD 5; the DMD appendix, Algorithms 1-3).

Every ``interval`` (n_s) iterations the retardation metric R_t is measured on m held samples: the
mean cosine similarity between D's layer-d features with the current mask and without it. If
``R_t > threshold`` (lambda) D runs masked with that mask for the next n_s iterations; otherwise it
runs unmasked and a fresh random mask is drawn for the next check.

Three placements of the mask:

- ``feature`` (Alg. 1, default): layer d's output is multiplied by an element mask (C, H, W)
  shared by the batch.
- ``input`` (Alg. 2): D's input, real and fake alike, is multiplied by a spatial mask (1, H, W);
  R_t compares layer d's features of the masked and unmasked input.
- ``head`` (Alg. 3): D's logit layer emits k logits; D's output is their mean over the heads the
  mask keeps (the appendix writes a masked sum; dividing by the kept count keeps the logit on the
  scale of one head whichever mask is drawn, so a switch does not jolt the GAN loss). R_t compares
  the masked and unmasked k logits.

The appendix leaves the mask ratio, the layer d, lambda, m and n_s open; they are recipe keys
(``discriminator.dmd.*``) with the defaults of docs/reference/recipe.md.

What R_t measures (``measure``). Taken literally (``features``), R_t compares layer d's features
``F * M`` with ``F``; for an element mask keeping a share k of the elements that cosine is
``sqrt(sum_kept F^2 / sum F^2)``, about ``sqrt(k)`` for any D whose feature energy is spread over
the elements (within 0.02 of the square root of the drawn mask's kept share on every net tried,
0.80-0.84 at ratio 0.3), so whether it clears lambda depends on the draw of the mask far more
than on what D has learned. ``output`` instead compares D's logits
with and without the mask, the masked features carried through the rest of D, so R_t answers
"does this mask change D's verdicts?", which depends on D's weights. ``schedule: random`` is the
control: the mask goes on at each check with a fixed probability, whatever R_t says.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import RecipeError
from ...nets.layers import running_stats_kept

PLACEMENTS = ("feature", "input", "head")
MEASURES = ("features", "output")
SCHEDULES = ("retardation", "random")


def retardation(masked: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """R_t: the mean over samples of the cosine similarity of masked and unmasked features.

    Args:
        masked, full: (N, ...) features of the same N samples with and without the mask.

    Returns:
        A scalar tensor in [-1, 1] (1 when the mask changes nothing).
    """
    return F.cosine_similarity(masked.flatten(1).float(), full.flatten(1).float(), dim=1, eps=1e-8).mean()


def output_similarity(masked: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """R_t for ``measure: output``: the cosine between D's outputs on the m held samples with and
    without the mask, each flattened over all samples into one vector.

    One vector rather than a mean over samples: a discriminator with one logit per sample (SAGAN,
    SRGAN) would give a per-sample cosine of +-1, the sign alone.

    Args:
        masked, full: (m, ...) outputs of D for the same m samples.

    Returns:
        A scalar tensor in [-1, 1].
    """
    return F.cosine_similarity(masked.flatten().float(), full.flatten().float(), dim=0, eps=1e-8)


def random_mask(shape: tuple[int, ...], ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A 0/1 float mask of ``shape`` dropping a fraction ``ratio`` of its elements (at least one kept)."""
    keep = (torch.rand(shape, generator=generator) >= ratio).float()
    if keep.sum() == 0:
        keep.view(-1)[0] = 1.0
    return keep


def _widened(layer: nn.Module, k: int) -> nn.Module:
    """A copy of the 1-output logit layer ``layer`` with ``k`` outputs: output 0 keeps the original
    weights, the others are drawn with the original weights' spread so the heads differ."""
    if hasattr(layer, "weight_orig") or hasattr(layer, "parametrizations"):
        raise RecipeError("discriminator.dmd.placement: head: the logit layer is spectral-normalised, which the "
                          "head placement does not widen; use placement feature or input")
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, k, bias=layer.bias is not None)
    else:
        new = nn.Conv2d(layer.in_channels, k, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                        layer.groups, bias=layer.bias is not None, padding_mode=layer.padding_mode)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        std = float(layer.weight.std()) if layer.weight.numel() > 1 else 0.02
        new.weight.normal_(0.0, std or 0.02)
        new.weight[:1].copy_(layer.weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.expand_as(new.bias))
    return new


def widen_head(net: nn.Module, k: int) -> None:
    """Give ``net`` k logits: replace the last 1-output Conv2d/Linear of ``net.head`` in place.

    The discriminator's output then has k along dim 1 ((N, k, H, W) for PatchGAN, (N, k) for a
    linear or 1x1 head), which :class:`DMDDiscriminator` reduces back to one logit.
    """
    head = getattr(net, "head", None)
    if head is None:
        raise RecipeError(f"discriminator.dmd.placement: head: {type(net).__name__} has no 'head' module "
                          "to widen; use placement feature or input")
    found = None
    for name, m in head.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            found = (name, m)
    if found is None or getattr(found[1], "out_channels", getattr(found[1], "out_features", 0)) != 1:
        raise RecipeError(f"discriminator.dmd.placement: head: {type(net).__name__}.head does not end in a "
                          "1-output Conv2d or Linear; use placement feature or input")
    name, layer = found
    new = _widened(layer, k)
    if name == "":
        net.head = new
        return
    parent_name, _, child = name.rpartition(".")
    parent = head.get_submodule(parent_name) if parent_name else head
    setattr(parent, child, new)


class DMDDiscriminator(nn.Module):
    """Wraps a discriminator with DMD's dynamic mask.

    Args:
        net: the discriminator; with placement 'head' its logit layer is widened to ``heads``.
        layer: the module whose output is layer d (a mask point of ``net``).
        placement: 'feature', 'input' or 'head'.
        mask_ratio: fraction of mask elements set to 0.
        heads: k, the number of logits for placement 'head'.
        seed: seeds the private generator the masks (and the random schedule's draws) come from.
        measure: what :meth:`retardation` compares: 'features' (layer d's features, or the k
            logits for 'head', the appendix) or 'output' (D's output, see :func:`output_similarity`).

    Shapes: as ``net``: (N, C, H, W) -> logits with 1 along dim 1.

    ``active`` says whether the mask applies now; :class:`DMDSchedule` switches it. While
    inactive the wrapper is exactly ``net`` (placement 'head' then averages all k logits).
    """

    def __init__(self, net: nn.Module, layer: nn.Module, placement: str = "feature", mask_ratio: float = 0.3,
                 heads: int = 4, seed: int = 0, measure: str = "features"):
        super().__init__()
        if placement not in PLACEMENTS:
            raise RecipeError(f"discriminator.dmd.placement: expected one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if measure not in MEASURES:
            raise RecipeError(f"discriminator.dmd.measure: expected one of {', '.join(MEASURES)}, got {measure!r}")
        self.net = net
        self.placement = placement
        self.measure = measure
        self.mask_ratio = float(mask_ratio)
        self.heads = int(heads)
        self.layer = layer
        self.active = False
        self.mask: torch.Tensor | None = None
        self.last_r: torch.Tensor | None = None  # the latest R_t, for the log
        self.generator = torch.Generator().manual_seed(int(seed))
        self._features: torch.Tensor | None = None
        self._record = False  # only measuring passes keep layer d's output (it holds a graph otherwise)
        if placement == "head":
            widen_head(net, self.heads)
        layer.register_forward_hook(self._hook)

    # The hook records layer d's output (for R_t) and applies a feature mask while active.
    def _hook(self, _module, _inputs, output):
        if self._record:
            self._features = output
        if self.placement == "feature" and self.active:
            return output * self._mask_for(output.shape[1:]).to(device=output.device, dtype=output.dtype)
        return None

    def _mask_for(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The current mask, drawn on first use at ``shape`` (the features' or the input's)."""
        if self.mask is None or tuple(self.mask.shape) != tuple(shape):
            self.mask = random_mask(tuple(shape), self.mask_ratio, self.generator)
        return self.mask

    def mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The mask's shape for input ``x``: (k,) for 'head', (1, H, W) for 'input', else layer d's (C, H, W)."""
        if self.placement == "head":
            return (self.heads,)
        if self.placement == "input":
            return (1, *x.shape[2:])
        with torch.no_grad(), running_stats_kept(self.net):
            was, self.active, self._record = self.active, False, True
            try:
                self.net(x[:1])
                shape = tuple(self._features.shape[1:])
            finally:
                self.active, self._record, self._features = was, False, None
        return shape

    def new_mask(self, x: torch.Tensor) -> None:
        """Draw a fresh random mask for inputs shaped like ``x`` (N, C, H, W)."""
        self.mask = random_mask(self.mask_shape(x), self.mask_ratio, self.generator)

    def _reduce_heads(self, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(device=out.device, dtype=out.dtype).view(1, -1, *([1] * (out.dim() - 2)))
        return (out * m).sum(1, keepdim=True) / m.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.placement == "input" and self.active:
            x = x * self._mask_for((1, *x.shape[2:])).to(device=x.device, dtype=x.dtype)
        out = self.net(x)
        if self.placement == "head":
            mask = self._mask_for((self.heads,)) if self.active else torch.ones(self.heads)
            out = self._reduce_heads(out, mask)
        return out

    @torch.no_grad()
    def retardation(self, x: torch.Tensor) -> torch.Tensor:
        """R_t on the held samples ``x`` (m, C, H, W) with the current mask, leaving D's state as it was."""
        if self.mask is None:
            self.new_mask(x)
        if self.measure == "output":
            return output_similarity(*self._outputs(x))
        was = self.active
        with running_stats_kept(self.net):
            try:
                self.active, self._record = False, True
                if self.placement == "head":
                    full = self.net(x)
                    masked = full * self.mask.to(device=full.device, dtype=full.dtype).view(
                        1, -1, *([1] * (full.dim() - 2)))
                    return retardation(masked, full)
                self.net(x)
                full = self._features
                if self.placement == "feature":
                    masked = full * self.mask.to(device=full.device, dtype=full.dtype)
                else:
                    self.net(x * self.mask.to(device=x.device, dtype=x.dtype))
                    masked = self._features
                return retardation(masked, full)
            finally:
                self.active, self._record, self._features = was, False, None

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's outputs on ``x`` with the current mask and without it (``measure: output``).

        'feature': the masked layer-d features go on through D's later layers; 'input': D on the
        masked input; 'head': the masked reduction of the k logits against the full one.
        """
        was = self.active
        with running_stats_kept(self.net):
            try:
                self.active = False
                if self.placement == "head":
                    logits = self.net(x)
                    return (self._reduce_heads(logits, self.mask),
                            self._reduce_heads(logits, torch.ones(self.heads)))
                full = self.net(x)
                if self.placement == "feature":
                    self.active = True  # the hook multiplies layer d's output by the mask
                    return self.net(x), full
                return self.net(x * self.mask.to(device=x.device, dtype=x.dtype)), full
            finally:
                self.active = was

    # The mask's state travels in the module's state_dict (as ``extra_state``), so checkpoints of
    # any discriminator holding this wrapper carry it and resume draws the same masks.
    def get_extra_state(self) -> dict:
        return {"active": self.active, "mask": self.mask, "last_r": self.last_r,
                "generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.active = bool(state["active"])
        self.mask = state["mask"]
        self.last_r = state["last_r"]
        self.generator.set_state(state["generator"])


def find_dmd(module: nn.Module) -> DMDDiscriminator | None:
    """The DMD wrapper inside ``module`` (itself, or wrapped by a selective discriminator), if any."""
    for m in module.modules():
        if isinstance(m, DMDDiscriminator):
            return m
    return None


class DMDSchedule:
    """When to measure R_t and switch the mask (Algorithm 1's outer loop).

    Args:
        threshold: lambda; masking is on for the next block when ``R_t > threshold``.
        interval: n_s, iterations between checks.
        samples: m, held samples R_t is measured on.
        reduce: optional function averaging R_t over data-parallel ranks so they all decide alike.
        schedule: 'retardation' (the appendix: on while R_t > lambda) or 'random' (a control: on
            with probability ``on_rate`` at each check, drawn from the DMD's private generator,
            which every rank seeds alike and checkpoints carry, so ranks agree and a resumed run
            draws what the uninterrupted one would).
        on_rate: the random schedule's probability of switching the mask on at a check.

    The first ``interval`` iterations run unmasked (R_0 = 0, as the appendix initialises it).
    The schedule keeps no state: what changes lives on the :class:`DMDDiscriminator`.
    """

    def __init__(self, threshold: float, interval: int, samples: int, reduce=None, *,
                 schedule: str = "retardation", on_rate: float = 0.3):
        if schedule not in SCHEDULES:
            raise RecipeError(f"discriminator.dmd.schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.threshold, self.interval, self.samples = float(threshold), int(interval), int(samples)
        self.reduce = reduce
        self.schedule, self.on_rate = schedule, float(on_rate)

    def decide(self, dmd: DMDDiscriminator, r: torch.Tensor) -> bool:
        """Whether the mask is on for the next block, given the measured R_t ``r``."""
        if self.schedule == "random":
            return bool(torch.rand((), generator=dmd.generator) < self.on_rate)
        # One host read every n_s iterations: the on/off decision steers which code runs next.
        return bool(r > self.threshold)

    def after_step(self, dmd: DMDDiscriminator, step: int, held: torch.Tensor) -> torch.Tensor | None:
        """Called after D's update of iteration ``step`` (0-based) with a batch of D inputs.

        At the end of every block of ``interval`` iterations: measure R_t on the first m samples
        of ``held`` with the current mask; switch masking on (keeping that mask) if
        :meth:`decide` says so, else switch it off and draw a fresh mask. Returns R_t when measured.
        """
        if (step + 1) % self.interval != 0:
            return None
        r = dmd.retardation(held[: self.samples])
        if self.reduce is not None:
            r = self.reduce(r)
        dmd.last_r = r
        if self.decide(dmd, r):
            dmd.active = True
        else:
            dmd.active = False
            dmd.new_mask(held)
        return r
