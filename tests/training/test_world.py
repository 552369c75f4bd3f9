"""The shapes world: determinism, ground truth, caption grammar."""

from __future__ import annotations

import numpy as np
import pytest

from studio.training import world


def test_render_is_deterministic_by_seed() -> None:
    a = world.render_scene(123, tier=1)
    b = world.render_scene(123, tier=1)
    c = world.render_scene(124, tier=1)
    assert np.array_equal(a.image, b.image)
    assert a.caption == b.caption and a.objects == b.objects
    assert not np.array_equal(a.image, c.image)


def test_batch_matches_single_renders_and_mixes_tiers() -> None:
    images, captions, scenes = world.render_batch(range(10, 16), tier=[1, 2, 1, 2, 1, 1])
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    for seed, tier, img, cap in zip(range(10, 16), [1, 2, 1, 2, 1, 1], images, captions,
                                    strict=True):
        single = world.render_scene(seed, tier)
        assert np.array_equal(single.image, img) and single.caption == cap
    assert [s.tier for s in scenes] == [1, 2, 1, 2, 1, 1]
    assert [len(s.objects) for s in scenes] == [1, 2, 1, 2, 1, 1]


def test_ground_truth_colours_and_positions() -> None:
    images, _, scenes = world.render_batch(range(200), tier=1)
    for img, scene in zip(images, scenes, strict=True):
        obj = scene.objects[0]
        assert obj.colour != scene.background
        # the object's centre pixel has exactly the palette colour it names
        assert tuple(img[int(obj.cy), int(obj.cx)]) == world.COLOURS[obj.colour]
        # a corner far from any object is pure background
        far = (0, 0) if obj.cx > 32 or obj.cy > 32 else (63, 63)
        if np.hypot(far[1] + 0.5 - obj.cx, far[0] + 0.5 - obj.cy) > obj.radius + 2:
            assert tuple(img[far]) == world.COLOURS[scene.background]
        ox, oy = world.POSITION_OFFSETS[obj.position]
        assert abs(obj.cx - 32 - ox) <= world.POSITION_JITTER
        assert abs(obj.cy - 32 - oy) <= world.POSITION_JITTER
        lo, hi = world.SIZE_RADII[obj.size]
        assert lo <= obj.radius <= hi


def test_object_area_matches_its_shape() -> None:
    """Coverage of a large object at the center equals the analytic area."""
    expected = {
        "circle": np.pi,
        "square": 2.0,
        "triangle": 3 * np.sqrt(3) / 4,
        # 10 triangles of sides r and inner*r with a 36 degree angle between them
        "star": 10 * 0.5 * world.STAR_INNER_RATIO * np.sin(np.pi / 5),
    }
    for shape, unit_area in expected.items():
        obj = world.ObjectSpec(shape, "white", "large", "center", 32.0, 32.0, 20.0, 0.3)
        img = world.render_from_specs(["black"], [[obj]])[0].astype(float)
        coverage = (img[..., 0] - 25) / (240 - 25)
        assert coverage.sum() == pytest.approx(unit_area * 400, rel=0.02), shape


def test_tier2_relation_is_true_in_the_image() -> None:
    _, _, scenes = world.render_batch(range(100), tier=2)
    for s in scenes:
        a, b = s.objects
        ax, ay = world.RELATION_AXES[s.relation]
        assert (a.cx - b.cx) * ax + (a.cy - b.cy) * ay > 20
        assert a.colour != b.colour and s.background not in (a.colour, b.colour)


def test_captions_name_what_the_scene_shows() -> None:
    _, captions, scenes = world.render_batch(range(2000), tier=1)
    empty = sum(c == "" for c in captions) / len(captions)
    assert 0.07 < empty < 0.13
    styles = set()
    for cap, s in zip(captions, scenes, strict=True):
        if not cap:
            assert s.named == frozenset()
            continue
        parsed = world.parse_caption(cap)
        assert parsed is not None, cap
        obj = s.objects[0]
        for attr in ("shape", "colour", "size", "position"):
            want = getattr(obj, attr) if attr in s.named else None
            assert parsed[attr] == want, (cap, attr)
        assert parsed["background"] == (s.background if "background" in s.named else None)
        styles.add("with" if " background with " in cap else "," if "," in cap else "canonical")
    assert styles == {"with", ",", "canonical"}


def test_name_probability_shortens_captions_and_leaves_pixels_alone() -> None:
    seeds = range(3000)
    images, _, usual = world.render_batch(seeds, tier=1)
    short_images, captions, short = world.render_batch(seeds, tier=1, name_probability=0.5)
    assert np.array_equal(images, short_images)
    assert [s.objects for s in short] == [s.objects for s in usual]

    def one_attribute_share(scenes: list) -> float:
        return float(np.mean([len(s.named) == 2 for s in scenes]))

    # one optional attribute of four named: 4 p (1 - p)^3 of the non-empty captions
    assert abs(one_attribute_share(usual) / 0.9 - 4 * 0.75 * 0.25**3) < 0.015
    assert abs(one_attribute_share(short) / 0.9 - 4 * 0.5**4) < 0.03
    for cap, s in zip(captions, short, strict=True):
        if cap:
            parsed = world.parse_caption(cap)
            named = {k for k in ("colour", "size", "position", "background") if parsed[k]}
            assert named == s.named - {"shape"}, cap
    full = world.render_batch(range(200), tier=1, name_probability=1.0)[2]
    assert {len(s.named) for s in full} == {0, 5}


def test_caption_grammar_round_trip() -> None:
    for seed in range(300):
        for tier in (1, 2):
            cap = world.render_scene(seed, tier, caption_style="canonical").caption
            parsed = world.parse_caption(cap)
            assert parsed is not None and parsed["tier"] == tier
            assert world.canonical_caption(**parsed) == cap
    assert world.canonical_caption("circle", "red", "small", "left", "blue") == (
        "a small red circle on the left on a blue background")
    assert world.canonical_caption("star", "orange") == "an orange star"


@pytest.mark.parametrize("text", [
    "", "   ", "a dog", "a red", "red circle blue", "a circle on a background",
    "a red circle to the left of", "a huge red circle", "circle circle",
])
def test_parse_rejects_non_prompts(text: str) -> None:
    assert world.parse_caption(text) is None


@pytest.mark.parametrize(("text", "drawable"), [
    ("a red circle on a blue background", True),
    ("a red circle", True),
    ("a circle on a red background", True),
    ("a red circle on a red background", False),
    ("red circle, red background", False),
    ("a red circle above a blue star on a white background", True),
    ("a red circle above a red star", False),
    ("a circle above a blue star on a blue background", False),
])
def test_world_prompts_ask_for_scenes_the_world_can_draw(text: str, drawable: bool) -> None:
    assert world.parse_caption(text) is not None
    assert world.is_world_prompt(text) is drawable


def test_every_canonical_caption_is_drawable() -> None:
    for seed in range(300):
        for tier in (1, 2):
            assert world.is_world_prompt(world.sample_scene_spec(seed, tier, "canonical")[2])


def test_parse_paraphrases_and_case() -> None:
    assert world.parse_caption("Red circle, blue background.") == {
        "tier": 1, "shape": "circle", "colour": "red", "size": None, "position": None,
        "background": "blue"}
    p = world.parse_caption("a blue background with a small red star at the top")
    assert p["background"] == "blue" and p["size"] == "small" and p["position"] == "top"
    p = world.parse_caption("a red circle to the left of a blue square on a white background")
    assert p["objects"] == [{"shape": "circle", "colour": "red"},
                            {"shape": "square", "colour": "blue"}]
    assert p["relation"] == "to the left of" and p["background"] == "white"


def test_palette_is_exact() -> None:
    assert world.COLOURS["red"] == (220, 40, 40)
    assert world.COLOURS["black"] == (25, 25, 25)
    assert len(world.COLOURS) == 8 and len(world.SHAPES) == 4


def test_coverage_is_the_alpha_the_renderer_paints() -> None:
    _, _, scenes = world.render_batch(range(40), tier=1)
    alpha = world.coverage([s.objects[0] for s in scenes])
    assert alpha.shape == (40, 64, 64) and alpha.min() >= 0.0 and alpha.max() <= 1.0
    for scene, a in zip(scenes, alpha, strict=True):
        obj = scene.objects[0]
        # Fully covered pixels carry the object's colour, uncovered ones the background's.
        assert (scene.image[a == 1.0] == world.COLOURS[obj.colour]).all()
        assert (scene.image[a == 0.0] == world.COLOURS[scene.background]).all()
        assert a[int(obj.cy), int(obj.cx)] == 1.0
