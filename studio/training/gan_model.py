"""The project's DCGAN: generator and spectrally normalised discriminator.

A generator is stored as ``config.json`` (``"architecture": "dcgan"``, ``z_dim``,
``channels``, ``image_size``, ``base_channels``, optionally ``coord_channels``) plus
``model.safetensors``; ``build_generator(config)`` rebuilds the module so the weights
load with ``load_state_dict(strict=True)``. Only torch is imported.

``coord_channels: true`` gives every up-sampling layer two more input channels holding
the x and y pixel coordinates (CoordConv, Liu et al. 2018). Without them a
transposed-convolution stack has to work out where it is from padding effects alone,
and Liu et al. show such a stack failing to render even a square at a given
coordinate; a generator that must draw an object where z puts it needs that map.

``layered: true`` builds a ``LayeredGenerator``: a scene is a background colour, an
object colour and the object's coverage, as the renderer paints it; the DCGAN stack
draws only the object's mask, upright and centred, and a spatial transformer places
it (see the class). It needs ``palette`` (the RGB triples its colour heads choose
from) and takes ``mapping_width``, ``template_radius`` and ``choice_temperature``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

ARCHITECTURE = "dcgan"
DEFAULT_CONFIG: dict[str, Any] = {
    "_class_name": "DCGANGenerator",
    "architecture": ARCHITECTURE,
    "z_dim": 64,
    "channels": 3,
    "image_size": 64,
    "base_channels": 32,
    "coord_channels": False,
    "layered": False,
    "mapping_width": 256,
    "template_radius": 24.0,
    "shapes": 4,
    "choice_temperature": 1.0,
    "output_range": "-1,1",
}


def _levels(image_size: int) -> int:
    levels = int(round(math.log2(image_size / 4)))
    if levels < 1 or 4 * 2 ** levels != image_size:
        raise ValueError(f"image_size must be 4 * 2**k (8, 16, 32, 64, ...), got {image_size}")
    return levels


class Generator(nn.Module):
    """z (N, z_dim) or (N, z_dim, 1, 1) -> image (N, channels, size, size) in [-1, 1].

    A transposed convolution takes z to 4x4, then each level doubles the size
    and halves the width (batch norm + ReLU), as in Radford et al. (2016).
    With ``coord_channels`` each up-sampling convolution also reads the pixel
    coordinates of its input (``CoordConcat``).
    """

    def __init__(self, z_dim: int, channels: int, image_size: int, base_channels: int,
                 coord_channels: bool = False, tanh: bool = True) -> None:
        super().__init__()
        self.z_dim = z_dim
        levels = _levels(image_size)
        width = base_channels * 2 ** (levels - 1)
        extra = 2 if coord_channels else 0
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(levels - 1):
            layers += [*([CoordConcat()] if extra else []),
                       nn.ConvTranspose2d(width + extra, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        layers += [*([CoordConcat()] if extra else []),
                   nn.ConvTranspose2d(width + extra, channels, 4, 2, 1),
                   *([nn.Tanh()] if tanh else [])]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.net(z)


# Logit units by which a layered generator's object colour avoids the background's.
EXCLUSION = 20.0


def checked_temperature(value: float) -> float:
    """``value`` as a layered generator's ``choice_temperature``; ValueError unless positive."""
    if not value > 0:
        raise ValueError(f"choice_temperature must be positive, got {value}")
    return float(value)


class Layers(NamedTuple):
    """What a ``LayeredGenerator`` draws for each z, before it is painted."""

    background: torch.Tensor  # (N, P) logits over the palette
    colour: torch.Tensor  # (N, P) logits over the palette, the object's
    shape: torch.Tensor  # (N, S) logits over the templates
    pose: torch.Tensor  # (N, 4): centre x, y (-1..1 across the image), radius / template radius, angle
    template: torch.Tensor  # (N, 1, size, size) mask logits of the upright object, centred


class LayeredGenerator(nn.Module):
    """z (N, z_dim) or (N, z_dim, 1, 1) -> image (N, 3, size, size) in [-1, 1], as layers.

    After the layered recursive GAN of Yang et al. (2017): a mapping MLP reads z; two
    linear heads on its output and z pick the background's and the object's colour by a
    softmax over the config's palette, a third picks one of ``shapes`` templates; a DCGAN
    stack reads that choice and draws the object's mask upright, centred and at
    ``template_radius`` pixels; a linear pose head says where it goes, how large and how
    far turned, and a spatial transformer (Jaderberg et al. 2015) puts it there,
    sampling at twice the resolution and averaging down, which anti-aliases the edge as
    the renderer does. The stack then spends its whole width on outlines, where a plain
    RGB stack must learn every shape again at each place, size, angle and colour pair.
    ``forward`` paints the softmax-weighted colours through the placed mask, so z still
    moves the image smoothly.

    ``choice_temperature`` T divides the choice logits where they paint (the colours
    and the template's input), not where the trainer scores them: a softmax trained
    by cross-entropy on a hard target stays calibrated, so z near the edge of a
    colour's region gets a blend of two palette colours, which no scene has. T < 1
    narrows those edges at sampling time, as StyleGAN's truncation trades variety
    for fidelity, but without losing any class: the argmax of each choice is the
    same at every T.
    """

    def __init__(self, z_dim: int, image_size: int, base_channels: int, palette: list,
                 mapping_width: int = 256, coord_channels: bool = False,
                 template_radius: float = 24.0, shapes: int = 4,
                 choice_temperature: float = 1.0) -> None:
        super().__init__()
        self.choice_temperature = checked_temperature(choice_temperature)
        self.z_dim = z_dim
        self.image_size = image_size
        self.template_radius = float(template_radius)
        if not 0 < self.template_radius <= image_size / 2:
            raise ValueError(f"template_radius must be in (0, {image_size / 2}], got {template_radius}")
        colours = torch.tensor(palette, dtype=torch.float32)
        if colours.dim() != 2 or colours.shape[1] != 3 or len(colours) < 2:
            raise ValueError(f"palette must be a list of at least two RGB triples, got {palette!r}")
        # 0-255 RGB -> the [-1, 1] range of the image; a fixed table, not a weight.
        self.register_buffer("palette", colours / 127.5 - 1.0, persistent=False)
        self.mapping = nn.Sequential(nn.Linear(z_dim, mapping_width), nn.ReLU(inplace=True),
                                     nn.Linear(mapping_width, mapping_width), nn.ReLU(inplace=True))
        # The heads also read z itself: the background is the argmax of a block of z in
        # the anchored map, which a linear layer on z computes outright.
        self.background = nn.Linear(mapping_width + z_dim, len(colours))
        self.colour = nn.Linear(mapping_width + z_dim, len(colours))
        self.shape = nn.Linear(mapping_width + z_dim, shapes)
        self.pose = nn.Linear(mapping_width + z_dim, 4)
        # Log-gains of the background, colour and shape logits: one exact colour needs a
        # logit margin of about 10 even where z lies near the edge of its region, and a
        # learnt gain gets there in a few hundred steps, where each weight alone would
        # take thousands.
        self.sharpness = nn.Parameter(torch.zeros(3))
        # The stack reads only the shape head's softmax: the upright outline depends on
        # the shape alone, and nothing else in z can leak into it as noise.
        self.template = Generator(shapes, 1, image_size, base_channels, coord_channels,
                                  tanh=False)

    def head_parameters(self) -> list[nn.Parameter]:
        """The linear heads' parameters (the trainer gives them a larger learning rate)."""
        return [*(p for head in (self.background, self.colour, self.shape, self.pose)
                  for p in head.parameters()), self.sharpness]

    def layers(self, z: torch.Tensor) -> Layers:
        z = z.flatten(1)
        h = self.mapping(z)
        hz = torch.cat([h, z], 1)
        gain = self.sharpness.exp()
        background = self.background(hz) * gain[0]
        # The object never takes the background's colour: that colour's logit is pushed
        # down by as much as the background is sure of it.
        colour = self.colour(hz) * gain[1] - EXCLUSION * background.softmax(1)
        shape = self.shape(hz) * gain[2]
        template = self.template((shape / self.choice_temperature).softmax(1))
        return Layers(background, colour, shape, self.pose(hz), template)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.compose(self.layers(z))

    def place(self, template: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """The object's coverage (N, 1, size, size) in [0, 1]: the template's sigmoid,
        turned, scaled and moved as ``pose`` says."""
        import torch.nn.functional as F

        tx, ty, scale, angle = pose.float().unbind(1)
        # Each output point looks up the template at s R(-angle) (point - centre), in the
        # coordinates affine_grid uses (x right, y down, -1..1 across the image).
        s = 1.0 / scale.clamp(min=0.05)
        cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
        theta = torch.stack([torch.stack([cos, sin, -(cos * tx + sin * ty)], 1),
                             torch.stack([-sin, cos, sin * tx - cos * ty], 1)], 1)
        n, size = len(pose), self.image_size
        grid = F.affine_grid(theta, [n, 1, 2 * size, 2 * size], align_corners=False)
        alpha = F.grid_sample(torch.sigmoid(template.float()), grid, mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        return F.avg_pool2d(alpha, 2)

    def compose(self, layers: Layers) -> torch.Tensor:
        """The image that ``layers`` paint."""
        palette, t = self.palette, self.choice_temperature
        bg = ((layers.background.float() / t).softmax(1) @ palette)[:, :, None, None]
        fg = ((layers.colour.float() / t).softmax(1) @ palette)[:, :, None, None]
        return bg + (fg - bg) * self.place(layers.template, layers.pose)


class CoordConcat(nn.Module):
    """Appends x and y, each running from -1 to 1 across the map, as two channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))
        return torch.cat([x, grid.expand(n, 2, h, w)], dim=1)


DISCRIMINATOR_NORMS = ("spectral", "batch")


class Discriminator(nn.Module):
    """Strided convolutions down to one logit per image.

    ``norm="spectral"`` bounds every layer's Lipschitz constant (Miyato et al.
    2018); ``norm="batch"`` is the original DCGAN discriminator, batch norm on
    every layer but the first, which learns faster at the start of training.
    """

    def __init__(self, channels: int, image_size: int, base_channels: int,
                 norm: str = "spectral") -> None:
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}")
        levels = _levels(image_size)
        layers: list[nn.Module] = []
        prev, width = channels, base_channels
        for level in range(levels):
            if norm == "spectral":
                layers.append(nn.utils.spectral_norm(nn.Conv2d(prev, width, 4, 2, 1)))
            elif level == 0:
                layers.append(nn.Conv2d(prev, width, 4, 2, 1))
            else:
                layers += [nn.Conv2d(prev, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width)]
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev, width = width, width * 2
        last = nn.Conv2d(prev, 1, 4, 1, 0)
        layers.append(nn.utils.spectral_norm(last) if norm == "spectral" else last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def build_generator(config: dict[str, Any]) -> Generator | LayeredGenerator:
    """Build the generator a ``config.json`` describes (missing keys take the defaults)."""
    cfg = {**DEFAULT_CONFIG, **config}
    arch = str(cfg.get("architecture", ARCHITECTURE)).lower()
    if arch != ARCHITECTURE:
        raise ValueError(f"architecture {arch!r} is not {ARCHITECTURE!r}")
    if cfg["layered"]:
        if int(cfg["channels"]) != 3:
            raise ValueError(f"a layered generator paints RGB (channels 3), not {cfg['channels']}")
        if "palette" not in cfg:
            raise ValueError("a layered generator needs its palette (a list of RGB triples)")
        return LayeredGenerator(int(cfg["z_dim"]), int(cfg["image_size"]),
                                int(cfg["base_channels"]), cfg["palette"],
                                int(cfg["mapping_width"]), bool(cfg["coord_channels"]),
                                float(cfg["template_radius"]), int(cfg["shapes"]),
                                float(cfg["choice_temperature"]))
    return Generator(int(cfg["z_dim"]), int(cfg["channels"]), int(cfg["image_size"]),
                     int(cfg["base_channels"]), bool(cfg["coord_channels"]))


def build_discriminator(config: dict[str, Any]) -> Discriminator:
    cfg = {**DEFAULT_CONFIG, **config}
    return Discriminator(int(cfg["channels"]), int(cfg["image_size"]),
                         int(cfg.get("disc_channels", cfg["base_channels"])),
                         str(cfg.get("disc_norm", "spectral")))
