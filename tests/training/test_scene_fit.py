"""Render and compare: clean scenes match the scene they show; blobs and noise do not."""

from __future__ import annotations

import numpy as np
import pytest

from studio.training import scene_fit, world


@pytest.fixture(scope="module")
def scenes():
    _, _, scenes = world.render_batch(range(5_000, 5_060), 1)
    return scenes


def test_real_scenes_match_what_they_show(scenes):
    for s in scenes:
        obj = s.objects[0]
        assert scene_fit.matches_clean_scene(s.image, s.background, obj.colour, obj.shape), s.caption


def test_a_wrong_shape_reading_is_worse_than_the_right_one(scenes):
    for s in scenes:
        obj = s.objects[0]
        right = scene_fit.mismatch(s.image, s.background, obj.colour, obj.shape)
        if obj.size == "large":
            for other in set(world.SHAPES) - {obj.shape}:
                assert scene_fit.mismatch(s.image, s.background, obj.colour, other) > right


def test_blurred_and_split_images_do_not_match():
    from PIL import Image, ImageFilter

    spec = world.ObjectSpec("star", "red", "large", "center", 32.0, 32.0, 22.0, 0.3)
    clean = world.render_from_specs(["white"], [[spec]])[0]
    assert scene_fit.matches_clean_scene(clean, "white", "red", "star")
    blob = np.asarray(Image.fromarray(clean).filter(ImageFilter.GaussianBlur(5)))
    assert not scene_fit.matches_clean_scene(blob, "white", "red", "star")
    split = np.empty_like(clean)
    split[:, :40] = world.COLOURS["white"]
    split[:, 40:] = world.COLOURS["red"]
    for shape in world.SHAPES:
        assert not scene_fit.matches_clean_scene(split, "white", "red", shape)


def test_noise_and_empty_images_do_not_match():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert not scene_fit.matches_clean_scene(noise, "black", "yellow", "circle")
    empty = np.broadcast_to(np.array(world.COLOURS["blue"], np.uint8), (64, 64, 3)).copy()
    assert scene_fit.mismatch(empty, "blue", "white", "square") == float("inf")
