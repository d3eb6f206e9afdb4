"""Colour label maps to class ids: the palette of a segmenter's training labels (:class:`Palette`),
Cityscapes' own (:func:`cityscapes_palette`), and the conversion by nearest palette colour
(:func:`colour_to_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Cityscapes colour of each of the 19 train classes, in trainId order (cityscapesScripts labels.py).
CITYSCAPES_TRAIN_COLOURS = (
    (128, 64, 128),  # 0 road
    (244, 35, 232),  # 1 sidewalk
    (70, 70, 70),  # 2 building
    (102, 102, 156),  # 3 wall
    (190, 153, 153),  # 4 fence
    (153, 153, 153),  # 5 pole
    (250, 170, 30),  # 6 traffic light
    (220, 220, 0),  # 7 traffic sign
    (107, 142, 35),  # 8 vegetation
    (152, 251, 152),  # 9 terrain
    (70, 130, 180),  # 10 sky
    (220, 20, 60),  # 11 person
    (255, 0, 0),  # 12 rider
    (0, 0, 142),  # 13 car
    (0, 0, 70),  # 14 truck
    (0, 60, 100),  # 15 bus
    (0, 80, 100),  # 16 train
    (0, 0, 230),  # 17 motorcycle
    (119, 11, 32),  # 18 bicycle
)
#: Colours of Cityscapes classes that are not trained on (trainId 255). Polegroup and license
#: plate are absent because they share their colour with pole and car.
CITYSCAPES_IGNORE_COLOURS = (
    (0, 0, 0),  # unlabeled, ego vehicle, rectification border, out of roi, static
    (111, 74, 0),  # dynamic
    (81, 0, 81),  # ground
    (250, 170, 160),  # parking
    (230, 150, 140),  # rail track
    (180, 165, 180),  # guard rail
    (150, 100, 100),  # bridge
    (150, 120, 90),  # tunnel
    (0, 0, 90),  # caravan
    (0, 0, 110),  # trailer
)
#: Colours farther than this (Euclidean, 0-255 RGB) from every Cityscapes colour become ignore;
#: it absorbs the JPEG noise of the pix2pix label halves without merging distinct classes.
CITYSCAPES_MAX_DISTANCE = 30.0


@dataclass(frozen=True)
class Palette:
    """Mapping from label-map colours to class ids.

    Attributes:
        name: "cityscapes" or "auto" (built from the data).
        colours: (K, 3) long RGB colours in 0..255, pairwise distinct.
        ids: (K,) long class id of each colour (``ignore_index`` for colours not trained on).
        max_distance: colours farther than this from every palette colour map to the ignore
            index; None maps every colour to its nearest palette colour.
    """

    name: str
    colours: torch.Tensor
    ids: torch.Tensor
    max_distance: float | None = None

    def to_dict(self) -> dict:
        """Plain-type form stored in checkpoints (loadable with ``weights_only=True``)."""
        return {
            "name": self.name,
            "colours": self.colours.tolist(),
            "ids": self.ids.tolist(),
            "max_distance": self.max_distance,
        }

    @staticmethod
    def from_dict(d: dict) -> "Palette":
        """Inverse of :meth:`to_dict`."""
        return Palette(
            name=str(d["name"]),
            colours=torch.tensor(d["colours"], dtype=torch.long).view(-1, 3),
            ids=torch.tensor(d["ids"], dtype=torch.long),
            max_distance=d.get("max_distance"),
        )


def cityscapes_palette(ignore_index: int = 255) -> Palette:
    """The 19 Cityscapes train-class colours (ids 0..18) plus the void colours (``ignore_index``)."""
    colours = torch.tensor(CITYSCAPES_TRAIN_COLOURS + CITYSCAPES_IGNORE_COLOURS, dtype=torch.long)
    ids = torch.tensor(
        list(range(len(CITYSCAPES_TRAIN_COLOURS))) + [ignore_index] * len(CITYSCAPES_IGNORE_COLOURS),
        dtype=torch.long,
    )
    return Palette("cityscapes", colours, ids, CITYSCAPES_MAX_DISTANCE)


def colour_to_ids(
    label_rgb,
    colours,
    ids: torch.Tensor | None = None,
    *,
    max_distance: float | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Convert a colour label map to class ids by nearest palette colour.

    Exact palette colours map to their id; other colours map to the id of the nearest palette
    colour (Euclidean RGB distance), or to ``ignore_index`` when farther than ``max_distance``.

    Args:
        label_rgb: (H, W, 3) uint8 array or tensor, RGB.
        colours: (K, 3) palette colours in 0..255 (tensor, array or nested list), or a
            :class:`Palette` (then ``ids`` and ``max_distance`` come from it).
        ids: (K,) id of each colour; default ``arange(K)``.
        max_distance: see above; None maps every colour to its nearest.
        ignore_index: id given to colours beyond ``max_distance``.

    Returns:
        (H, W) LongTensor of class ids.
    """
    if isinstance(colours, Palette):
        ids, max_distance, colours = colours.ids, colours.max_distance, colours.colours
    lab = torch.as_tensor(label_rgb)
    if lab.dim() != 3 or lab.shape[-1] != 3:
        raise ValueError(f"colour_to_ids expects an (H, W, 3) RGB label map, got shape {tuple(lab.shape)}")
    pal = torch.as_tensor(colours).to(torch.long).view(-1, 3)
    ids = torch.arange(pal.shape[0]) if ids is None else torch.as_tensor(ids).to(torch.long)
    lab = lab.to(torch.long)
    codes = (lab[..., 0] << 16) | (lab[..., 1] << 8) | lab[..., 2]
    # Distances are computed once per distinct colour, not per pixel: a label map has few colours.
    uniq, inverse = torch.unique(codes.flatten(), return_inverse=True)
    uniq_rgb = torch.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], dim=1)
    dist = torch.cdist(uniq_rgb.double(), pal.double())
    best, nearest = dist.min(dim=1)
    uniq_ids = ids[nearest].clone()
    if max_distance is not None:
        uniq_ids[best > max_distance] = ignore_index
    return uniq_ids[inverse].view(codes.shape)
