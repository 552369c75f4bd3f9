"""The fixed z -> scene map of the anchored GAN recipe follows the world's distribution."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest

from studio.training import world, z_scenes


def _specs(n: int, seed: int = 0, dims: int = 64):
    z = np.random.default_rng(seed).standard_normal((n, dims))
    return z, *z_scenes.scene_specs(z)


def test_every_class_gets_an_even_share_and_never_the_background_colour() -> None:
    _, backgrounds, objects = _specs(16000)
    obj = [o[0] for o in objects]
    assert all(o.colour != b for o, b in zip(obj, backgrounds, strict=True))
    classes = Counter((o.shape, o.colour) for o in obj)
    assert len(classes) == 32
    # 500 expected per class; a dropped or doubled class would be far outside this.
    assert 380 < min(classes.values()) and max(classes.values()) < 620
    for values, key in ((world.COLOUR_NAMES, backgrounds),
                        (world.SIZES, [o.size for o in obj]),
                        (world.POSITIONS, [o.position for o in obj])):
        counts = Counter(key)
        assert set(counts) == set(values)
        share = np.array([counts[v] for v in values]) / len(obj)
        assert np.allclose(share, 1 / len(values), atol=0.02)


def test_continuous_attributes_stay_in_the_worlds_ranges() -> None:
    _, _, objects = _specs(2000, seed=1)
    for (o,) in objects:
        lo, hi = world.SIZE_RADII[o.size]
        assert lo <= o.radius <= hi
        ox, oy = world.POSITION_OFFSETS[o.position]
        assert abs(o.cx - 32 - ox) <= world.POSITION_JITTER
        assert abs(o.cy - 32 - oy) <= world.POSITION_JITTER
        assert 0 <= o.angle < 2 * np.pi and (o.shape != "circle" or o.angle == 0)
        if o.shape == "square":
            assert o.angle <= np.pi / 2
        assert world._position_name(o.cx - 32, o.cy - 32) == o.position
        # The anchor loss reads the background from the top-left pixel.
        assert np.hypot(o.cx, o.cy) > o.radius + 1


def test_the_map_reads_only_its_blocks_and_is_deterministic() -> None:
    z, backgrounds, objects = _specs(64, seed=2)
    free = z.copy()
    free[:, z_scenes.ANCHOR_DIMS:] = np.random.default_rng(3).standard_normal(
        (64, 64 - z_scenes.ANCHOR_DIMS))
    assert z_scenes.scene_specs(free) == (backgrounds, objects)
    # Argmax blocks and signs do not change when z is scaled (truncation).
    bg_half, obj_half = z_scenes.scene_specs(0.5 * z)
    assert bg_half == backgrounds
    assert [(o.colour, o.size) for (o,) in obj_half] == [(o.colour, o.size) for (o,) in objects]


def test_render_draws_the_named_scene() -> None:
    z, backgrounds, objects = _specs(8, seed=4)
    images = z_scenes.render(z)
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.uint8
    for image, bg, (o,) in zip(images, backgrounds, objects, strict=True):
        assert tuple(image[0, 0]) == world.COLOURS[bg]
        assert tuple(image[int(o.cy), int(o.cx)]) == world.COLOURS[o.colour]


def test_short_latents_are_rejected() -> None:
    with pytest.raises(ValueError, match="z must be"):
        z_scenes.scene_specs(np.zeros((2, z_scenes.ANCHOR_DIMS - 1)))


def test_upright_scenes_differ_only_in_angle() -> None:
    z, backgrounds, objects = _specs(200, seed=5)
    bg_up, obj_up = z_scenes.scene_specs(z, angles=1)
    assert bg_up == backgrounds
    assert all(o.angle == 0 for (o,) in obj_up)
    assert [dataclasses.replace(o, angle=0.0) for (o,) in objects] == [o for (o,) in obj_up]
    assert any(o.angle != 0 for (o,) in objects)


def test_fixed_angles_are_evenly_spaced_over_each_period() -> None:
    z, _, objects = _specs(2000, seed=6)
    _, fixed = z_scenes.scene_specs(z, angles=4)
    for shape, sides in world.SIDES.items():
        turns = [o.angle * sides / (2 * math.pi) for (o,) in fixed if o.shape == shape]
        assert sorted({round(t, 6) for t in turns}) == [0.0, 0.25, 0.5, 0.75]
    # Each fixed angle is the continuous one rounded down to its quarter of the period.
    for (o,), (f,) in zip(objects, fixed, strict=True):
        if o.shape in world.SIDES:
            period = 2 * math.pi / world.SIDES[o.shape]
            assert f.angle == pytest.approx(period * math.floor(4 * o.angle / period) / 4)
            assert dataclasses.replace(f, angle=o.angle) == o


def test_negative_angle_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="angles"):
        z_scenes.scene_specs(np.zeros((1, z_scenes.ANCHOR_DIMS)), angles=-1)


def test_layer_targets_paint_the_scene_the_map_names() -> None:
    z = np.random.default_rng(3).standard_normal((24, 64))
    palette = np.array(list(world.COLOURS.values()), np.float32)
    for angles in (0, 1):
        target = z_scenes.layer_targets(z, angles, template_radius=20.0)
        a = target.alpha[..., None]
        painted = (palette[target.background][:, None, None] * (1 - a)
                   + palette[target.colour][:, None, None] * a)
        assert np.array_equal(np.clip(np.rint(painted), 0, 255).astype(np.uint8),
                              z_scenes.render(z, angles))
        assert (target.background != target.colour).all()
        _, objects = z_scenes.scene_specs(z, angles)
        for (obj,), shape, pose, template in zip(objects, target.shape, target.pose,
                                                 target.template, strict=True):
            assert pose[:2] == pytest.approx([(obj.cx - 32) / 32, (obj.cy - 32) / 32], abs=1e-6)
            assert pose[2:] == pytest.approx([obj.radius / 20.0, obj.angle], abs=1e-6)
            assert world.SHAPES[shape] == obj.shape
            # The template is the same shape upright, at the centre, 20 px across its radius.
            assert template[32, 32] == 1.0 and template[32, 32 + 21] == 0.0
        if angles == 1:
            assert (target.pose[:, 3] == 0).all()
