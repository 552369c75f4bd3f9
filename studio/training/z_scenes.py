"""A fixed map from a GAN latent z ~ N(0, I) to one tier-1 shapes-world scene.

The anchored GAN recipe (``train_gan --anchor``) asks the generator to draw, for
every z, the scene this map names, beside the usual adversarial loss. An
unconditional GAN left to itself on a CPU budget draws blobs on a few favourite
backgrounds (see models/shapes-gan/MODEL_CARD.md); tying each z to a scene
gives every shape, colour and background its own share of the latent space from
the first step, so no mode can be dropped.

The first ``ANCHOR_DIMS`` coordinates of z name the scene, so that the scenes
follow the world's own distribution (``world.sample_scene_spec``). The generator's
first layer is linear in z, so each attribute is read from z the way a few ReLU
units can: the argmax of a block of k independent standard normals is uniform
over k values, and picks the background, then the object's colour among the
other seven; the signs of two coordinates pick the shape and one sign the size.
The position takes a sign (the horizontal or the vertical axis) and a coordinate
whose normal CDF u = Phi(z_i) is cut at 0.4 and 0.6 (negative side, centre,
positive side): the offset along the axis then grows with that coordinate, and
every position gets a fifth. u also scales jitter, radius and angle. A shape with
k-fold symmetry looks the same at angle 0 and 2 pi / k, so the angle is
u * 2 pi / k: the drawing turns continuously with z over the whole range. With
``angles=K`` the angle takes only K evenly spaced values of that period (u cut
into K equal shares; K = 1 draws every shape upright): a generator that cannot
yet read the angle from z precisely blurs a turning outline into a disc, while
each of a few fixed outlines it can learn like any other attribute. The
remaining coordinates are free.
"""

from __future__ import annotations

import bisect
import math
from functools import cache
from typing import NamedTuple

import numpy as np

from studio.training import world

BACKGROUND = slice(0, 8)
COLOUR = slice(8, 16)
SHAPE = slice(16, 18)
SIZE, AXIS, ALONG, JITTER_X, JITTER_Y, RADIUS, ANGLE = range(18, 25)
ANCHOR_DIMS = 25
# Quantiles of Phi(z[ALONG]) below which the object sits on the axis's negative side
# (left, top) and above which on its positive side (right, bottom); between, the
# centre. 0.4 / 0.2 / 0.4 on each of the two axes gives every position a fifth.
ALONG_EDGES = (0.4, 0.6)
# The positions along each axis in order of offset: z[AXIS] <= 0 picks the first row.
AXIS_POSITIONS = (("left", "center", "right"), ("top", "center", "bottom"))


def _uniform(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise: N(0, 1) samples -> U(0, 1)."""
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def scene_specs(
    z: np.ndarray, angles: int = 0
) -> tuple[list[str], list[tuple[world.ObjectSpec]]]:
    """(backgrounds, objects) of the scenes that latents ``z`` (N, >= ANCHOR_DIMS) name.

    ``angles`` 0 turns the shapes continuously with z; K > 0 allows only K angles
    per symmetry period, and 1 draws every shape upright (angle 0, one of the
    world's own angles).
    """
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or z.shape[1] < ANCHOR_DIMS:
        raise ValueError(f"z must be (N, >= {ANCHOR_DIMS}), got {z.shape}")
    if angles < 0:
        raise ValueError(f"angles must be 0 (continuous) or positive, got {angles}")
    u = _uniform(z[:, ALONG:ANCHOR_DIMS])
    colours = world.COLOUR_NAMES
    jitter = world.POSITION_JITTER
    backgrounds: list[str] = []
    objects: list[tuple[world.ObjectSpec]] = []
    for row, (ul, ux, uy, ur, ua) in zip(z, u, strict=True):
        bg_index = int(np.argmax(row[BACKGROUND]))
        colour_logits = row[COLOUR].copy()
        colour_logits[bg_index] = -np.inf  # the object never takes the background's colour
        shape_bits = row[SHAPE] > 0
        shape = world.SHAPES[2 * int(shape_bits[0]) + int(shape_bits[1])]
        size = world.SIZES[int(row[SIZE] > 0)]
        position = AXIS_POSITIONS[int(row[AXIS] > 0)][bisect.bisect_right(ALONG_EDGES, ul)]
        lo, hi = world.SIZE_RADII[size]
        ox, oy = world.POSITION_OFFSETS[position]
        turn = min(math.floor(ua * angles), angles - 1) / angles if angles else ua
        angle = 2 * math.pi * turn / world.SIDES[shape] if shape in world.SIDES else 0.0
        backgrounds.append(colours[bg_index])
        objects.append((world.ObjectSpec(
            shape=shape, colour=colours[int(np.argmax(colour_logits))], size=size,
            position=position, cx=32.0 + ox + (2 * ux - 1) * jitter,
            cy=32.0 + oy + (2 * uy - 1) * jitter, radius=float(lo + (hi - lo) * ur),
            angle=float(angle),
        ),))
    return backgrounds, objects


def render(z: np.ndarray, angles: int = 0) -> np.ndarray:
    """The scenes ``z`` names, rendered: uint8 (N, 64, 64, 3)."""
    return world.render_from_specs(*scene_specs(z, angles))


class LayerTargets(NamedTuple):
    """What a layered generator should draw for a batch of z (indices into
    ``world.COLOUR_NAMES``; painted together, ``alpha`` and the colours are ``render``)."""

    background: np.ndarray  # (N,) int64
    colour: np.ndarray  # (N,) int64
    shape: np.ndarray  # (N,) int64, index into world.SHAPES
    alpha: np.ndarray  # (N, 64, 64) float32: the object's coverage where the map puts it
    template: np.ndarray  # (N, 64, 64) float32: the same object upright, centred, template_radius
    pose: np.ndarray  # (N, 4) float32: centre x, y (-1..1), radius / template_radius, angle


@cache
def upright_templates(template_radius: float) -> np.ndarray:
    """Each of ``world.SHAPES`` upright at the image centre, ``template_radius`` across:
    its coverage, (len(SHAPES), 64, 64) float32. Read-only (cached)."""
    half = world.IMAGE_SIZE / 2
    alpha = world.coverage([world.ObjectSpec(shape, world.COLOUR_NAMES[0], "", "", half, half,
                                             template_radius, 0.0) for shape in world.SHAPES])
    alpha.flags.writeable = False
    return alpha


def layer_targets(z: np.ndarray, angles: int = 0, template_radius: float = 24.0) -> LayerTargets:
    """The layers of the scenes ``z`` names (see ``LayerTargets``)."""
    backgrounds, objects = scene_specs(z, angles)
    objs = [o for o, in objects]
    half = world.IMAGE_SIZE / 2
    shapes = np.array([world.SHAPES.index(o.shape) for o in objs], np.int64)
    pose = np.array([((o.cx - half) / half, (o.cy - half) / half, o.radius / template_radius,
                      o.angle) for o in objs], np.float32).reshape(-1, 4)
    return LayerTargets(np.array([world.COLOUR_NAMES.index(b) for b in backgrounds], np.int64),
                        np.array([world.COLOUR_NAMES.index(o.colour) for o in objs], np.int64),
                        shapes, world.coverage(objs),
                        upright_templates(float(template_radius))[shapes], pose)
