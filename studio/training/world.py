"""The shapes world: a procedural 64x64 world with exact ground truth.

Every bundled model is trained on images rendered here, and the evaluation
reads generated images back with a classifier trained on the same world, so
this module is the single definition of what a "shapes-world" image and prompt
are (see SHAPES_WORLD.md).

Rendering is vectorised numpy: each shape is described by a signed distance
(negative inside) and the pixel coverage is ``clip(0.5 - d, 0, 1)``, which gives
one pixel of analytic anti-aliasing at a fraction of the cost of supersampling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 64

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 50),
    "green": (50, 170, 70),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
SIZE_RADII: dict[str, tuple[float, float]] = {"small": (8.0, 12.0), "large": (18.0, 24.0)}
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
# Offsets of the object centre from the image centre, in pixels (x right, y down).
POSITION_OFFSETS: dict[str, tuple[float, float]] = {
    "left": (-16.0, 0.0),
    "right": (16.0, 0.0),
    "top": (0.0, -16.0),
    "bottom": (0.0, 16.0),
    "center": (0.0, 0.0),
}
POSITION_JITTER = 3.0
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
# Where the first-named object sits relative to the second, as (dx, dy) sign.
RELATION_AXES: dict[str, tuple[float, float]] = {
    "to the left of": (-1.0, 0.0),
    "to the right of": (1.0, 0.0),
    "above": (0.0, -1.0),
    "below": (0.0, 1.0),
}
TIER2_SEPARATION = 14.0  # each object's offset from the pair's centre along the relation axis
EMPTY_CAPTION_RATE = 0.1
NAME_PROBABILITY = 0.75  # chance that an optional attribute is named in a random caption
STAR_INNER_RATIO = 0.5  # inner/outer radius; fatter than a pentagram so small stars stay legible

TIER1_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position", "background")
VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        set(SHAPES)
        | set(COLOURS)
        | set(SIZES)
        | {w for p in POSITION_PHRASES.values() for w in p.split()}
        | {w for r in RELATIONS for w in r.split()}
        | {"a", "an", "on", "background", "with", ","}
    )
)


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene; ``angle`` in radians, centre and radius in pixels."""

    shape: str
    colour: str
    size: str
    position: str
    cx: float
    cy: float
    radius: float
    angle: float


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene with its caption and ground truth.

    ``named`` lists the attributes the caption names: for tier 1 a subset of
    ``TIER1_ATTRIBUTES``; for tier 2 ``{"objects", "relation"}`` plus
    ``"background"`` when named. It is empty for an empty caption.
    """

    image: np.ndarray
    caption: str
    background: str
    objects: tuple[ObjectSpec, ...]
    tier: int
    named: frozenset[str]
    relation: str | None = None


# --------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _object_phrase(shape: str, colour: str | None = None, size: str | None = None) -> str:
    words = [w for w in (size, colour, shape) if w]
    return f"{_article(words[0])} {' '.join(words)}"


def canonical_caption(
    shape: str | None = None,
    colour: str | None = None,
    size: str | None = None,
    position: str | None = None,
    background: str | None = None,
    *,
    objects: Sequence[dict] | None = None,
    relation: str | None = None,
    tier: int | None = None,
) -> str:
    """Build the canonical caption; ``None`` attributes are left out.

    Tier 1: ``a {size} {colour} {shape} {position phrase} on a {colour} background``.
    Tier 2 (``objects`` = two dicts with ``shape`` and optional ``colour``, plus
    ``relation``): ``a red circle to the left of a blue square on a white background``.
    Accepts the dict ``parse_caption`` returns as keyword arguments.
    """
    del tier  # present so that canonical_caption(**parse_caption(text)) works
    if objects is not None:
        if len(objects) != 2 or relation not in RELATIONS:
            raise ValueError("a two-object caption needs two objects and a known relation")
        first, second = objects
        text = (
            f"{_object_phrase(first['shape'], first.get('colour'))} {relation} "
            f"{_object_phrase(second['shape'], second.get('colour'))}"
        )
    else:
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}")
        text = _object_phrase(shape, colour, size)
        if position:
            text += " " + POSITION_PHRASES[position]
    if background:
        text += f" on {_article(background)} {background} background"
    return text


def _tier1_caption(
    rng: np.random.Generator, obj: ObjectSpec, background: str, named: frozenset[str]
) -> str:
    shape = obj.shape
    colour = obj.colour if "colour" in named else None
    size = obj.size if "size" in named else None
    position = obj.position if "position" in named else None
    bg = background if "background" in named else None
    style = rng.integers(0, 4) if bg else 0
    if style == 1:
        # "red circle, blue background"
        words = [w for w in (size, colour, shape) if w]
        text = " ".join(words)
        if position:
            text += " " + POSITION_PHRASES[position]
        return f"{text}, {bg} background"
    if style == 2:
        # "a blue background with a small red star at the top"
        text = _object_phrase(shape, colour, size)
        if position:
            text += " " + POSITION_PHRASES[position]
        return f"{_article(bg)} {bg} background with {text}"
    return canonical_caption(shape, colour, size, position, bg)


_COLOUR_RE = "|".join(COLOURS)
_SHAPE_RE = "|".join(SHAPES)
_SIZE_RE = "|".join(SIZES)
_POS_RE = "|".join(re.escape(p) for p in POSITION_PHRASES.values())
_REL_RE = "|".join(re.escape(r) for r in RELATIONS)
_OBJ1 = (
    rf"(?:an? )?(?:(?P<size>{_SIZE_RE}) )?(?:(?P<colour>{_COLOUR_RE}) )?(?P<shape>{_SHAPE_RE})"
    rf"(?: (?P<position>{_POS_RE}))?"
)
_BG_TAIL = rf"(?: on an? (?P<background>{_COLOUR_RE}) background)?"
_TIER1_PATTERNS = (
    re.compile(rf"^{_OBJ1}{_BG_TAIL}$"),
    re.compile(rf"^{_OBJ1} ?, ?(?P<background>{_COLOUR_RE}) background$"),
    re.compile(rf"^an? (?P<background>{_COLOUR_RE}) background with {_OBJ1}$"),
)
_TIER2_PATTERN = re.compile(
    rf"^(?:an? )?(?:(?P<colour1>{_COLOUR_RE}) )?(?P<shape1>{_SHAPE_RE}) (?P<relation>{_REL_RE}) "
    rf"(?:an? )?(?:(?P<colour2>{_COLOUR_RE}) )?(?P<shape2>{_SHAPE_RE}){_BG_TAIL}$"
)
_PHRASE_TO_POSITION = {v: k for k, v in POSITION_PHRASES.items()}


def normalise_caption(text: str) -> str:
    """Lower-case, single-spaced, without trailing full stop."""
    text = " ".join(text.lower().replace(",", " , ").split()).replace(" ,", ",")
    return text.rstrip(" .")


def parse_caption(text: str) -> dict | None:
    """Parse a shapes-world prompt into the attributes it requests.

    Returns ``None`` for anything that is not a (non-empty) shapes-world prompt.
    Tier 1: ``{"tier": 1, "shape", "colour", "size", "position", "background"}``
    (attributes the prompt leaves out are ``None``). Tier 2: ``{"tier": 2,
    "objects": [{"shape", "colour"}, {"shape", "colour"}], "relation", "background"}``.
    """
    if not isinstance(text, str):
        return None
    norm = normalise_caption(text)
    if not norm:
        return None
    m = _TIER2_PATTERN.match(norm)
    if m:
        return {
            "tier": 2,
            "objects": [
                {"shape": m["shape1"], "colour": m["colour1"]},
                {"shape": m["shape2"], "colour": m["colour2"]},
            ],
            "relation": m["relation"],
            "background": m["background"],
        }
    for pattern in _TIER1_PATTERNS:
        m = pattern.match(norm)
        if m:
            pos = m["position"]
            return {
                "tier": 1,
                "shape": m["shape"],
                "colour": m["colour"],
                "size": m["size"],
                "position": _PHRASE_TO_POSITION[pos] if pos else None,
                "background": m["background"],
            }
    return None


def is_drawable(parsed: dict) -> bool:
    """Whether the world can show what a parsed prompt asks for.

    The renderer never paints an object in the background's colour, nor the two
    objects of a tier-2 scene in one colour, so a prompt naming either is asking
    for a scene the world does not have.
    """
    background = parsed.get("background")
    if parsed["tier"] == 1:
        colours = [parsed["colour"]] if parsed["colour"] else []
    else:
        colours = [o["colour"] for o in parsed["objects"] if o["colour"]]
    return len(set(colours)) == len(colours) and (background is None or background not in colours)


def is_world_prompt(text: str) -> bool:
    """A prompt the caption grammar accepts and the world can draw."""
    parsed = parse_caption(text)
    return parsed is not None and is_drawable(parsed)


# --------------------------------------------------------------------------- scenes


def _pick(rng: np.random.Generator, options: Sequence[str], exclude: Iterable[str] = ()) -> str:
    excluded = set(exclude)
    allowed = [o for o in options if o not in excluded]
    return allowed[int(rng.integers(0, len(allowed)))]


def _position_name(dx: float, dy: float) -> str:
    if abs(dx) < 6 and abs(dy) < 6:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def sample_scene_spec(
    seed: int, tier: int = 1, caption_style: str = "random",
    name_probability: float = NAME_PROBABILITY,
) -> tuple[str, tuple[ObjectSpec, ...], str, frozenset[str], str | None]:
    """Draw a scene's ground truth and caption (no pixels) deterministically from ``seed``.

    ``caption_style``: ``"random"`` (training distribution: ~10% empty, random
    subset of attributes named, paraphrases), ``"canonical"`` (every attribute
    named, canonical form) or ``"empty"``. ``name_probability`` is the chance that a
    random tier-1 caption names each optional attribute; it changes captions only.
    Returns ``(background, objects, caption, named, relation)``.
    """
    if tier not in (1, 2):
        raise ValueError("tier must be 1 or 2")
    if caption_style not in ("random", "canonical", "empty"):
        raise ValueError(f"unknown caption style {caption_style!r}")
    rng = np.random.default_rng((int(seed), tier))
    background = _pick(rng, COLOUR_NAMES)
    j = POSITION_JITTER
    relation = None
    if tier == 1:
        shape = _pick(rng, SHAPES)
        colour = _pick(rng, COLOUR_NAMES, exclude=[background])
        size = _pick(rng, SIZES)
        position = _pick(rng, POSITIONS)
        lo, hi = SIZE_RADII[size]
        ox, oy = POSITION_OFFSETS[position]
        objects: tuple[ObjectSpec, ...] = (
            ObjectSpec(
                shape=shape,
                colour=colour,
                size=size,
                position=position,
                cx=32.0 + ox + rng.uniform(-j, j),
                cy=32.0 + oy + rng.uniform(-j, j),
                radius=float(rng.uniform(lo, hi)),
                angle=float(rng.uniform(0, 2 * np.pi)) if shape != "circle" else 0.0,
            ),
        )
    else:
        relation = _pick(rng, RELATIONS)
        ax, ay = RELATION_AXES[relation]
        pair_x = 32.0 + rng.uniform(-j, j)
        pair_y = 32.0 + rng.uniform(-j, j)
        first_colour = _pick(rng, COLOUR_NAMES, exclude=[background])
        colours = (first_colour, _pick(rng, COLOUR_NAMES, exclude=[background, first_colour]))
        objs = []
        for k, sign in enumerate((1.0, -1.0)):
            shape = _pick(rng, SHAPES)
            dx = sign * ax * TIER2_SEPARATION + rng.uniform(-1.5, 1.5)
            dy = sign * ay * TIER2_SEPARATION + rng.uniform(-1.5, 1.5)
            lo, hi = SIZE_RADII["small"]
            objs.append(
                ObjectSpec(
                    shape=shape,
                    colour=colours[k],
                    size="small",
                    position=_position_name(pair_x + dx - 32.0, pair_y + dy - 32.0),
                    cx=pair_x + dx,
                    cy=pair_y + dy,
                    radius=float(rng.uniform(lo, hi)),
                    angle=float(rng.uniform(0, 2 * np.pi)) if shape != "circle" else 0.0,
                )
            )
        objects = tuple(objs)

    # Caption randomness comes after the scene draws, so a scene's pixels do
    # not depend on its caption style.
    if caption_style == "empty" or (
        caption_style == "random" and rng.random() < EMPTY_CAPTION_RATE
    ):
        return background, objects, "", frozenset(), relation
    if tier == 1:
        if caption_style == "canonical":
            named = frozenset(TIER1_ATTRIBUTES)
        else:
            named = frozenset(
                ["shape"]
                + [a for a in ("colour", "size", "position", "background")
                   if rng.random() < name_probability]
            )
        caption = (
            canonical_caption(
                objects[0].shape, objects[0].colour, objects[0].size,
                objects[0].position, background,
            )
            if caption_style == "canonical"
            else _tier1_caption(rng, objects[0], background, named)
        )
    else:
        with_bg = caption_style == "canonical" or rng.random() < 0.5
        named = frozenset({"objects", "relation"} | ({"background"} if with_bg else set()))
        caption = canonical_caption(
            objects=[{"shape": o.shape, "colour": o.colour} for o in objects],
            relation=relation,
            background=background if with_bg else None,
        )
    return background, objects, caption, named, relation


def _yx() -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    return coords[:, None], coords[None, :]


_Y, _X = _yx()
# Sides (points, for the star) of each polygon: also its order of rotational symmetry.
SIDES = {"square": 4, "triangle": 3, "star": 5}


def signed_distance(
    shape: str, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, angle: np.ndarray
) -> np.ndarray:
    """Signed distance in pixels (negative inside) of N objects of one shape, (N, 64, 64).

    Polygons and the star are folded into one symmetric wedge so a single edge
    describes the whole outline; the distance to that edge's line is exact
    inside and a close over-estimate of coverage only within a pixel of a corner.
    """
    cx = np.asarray(cx, np.float32)[:, None, None]
    cy = np.asarray(cy, np.float32)[:, None, None]
    r = np.asarray(radius, np.float32)[:, None, None]
    a = np.asarray(angle, np.float32)[:, None, None]
    dx = _X[None] - cx
    dy = _Y[None] - cy
    rho = np.sqrt(dx * dx + dy * dy)
    if shape == "circle":
        return rho - r
    n = SIDES[shape]
    wedge = 2 * np.pi / n
    # angle measured from the first vertex; the image y axis points down
    phi = np.mod(np.arctan2(dy, dx) - a, wedge)
    phi = np.minimum(phi, wedge - phi)
    px = rho * np.cos(phi)
    py = rho * np.sin(phi)
    half = wedge / 2
    inner = STAR_INNER_RATIO if shape == "star" else np.cos(half)
    # edge from vertex A=(r, 0) to B=(inner*r*cos(half), inner*r*sin(half))
    ex = inner * np.cos(half) - 1.0
    ey = inner * np.sin(half)
    norm = np.hypot(ex, ey)
    # outward normal of the edge (pointing away from the origin)
    nx, ny = ey / norm, -ex / norm
    return (px - r) * nx + py * ny


def coverage(objects: Sequence[ObjectSpec]) -> np.ndarray:
    """Share of each pixel that ``objects[k]`` covers, (N, 64, 64) float32 in [0, 1].

    This is the anti-aliasing alpha the renderer paints each object with.
    """
    alpha = np.zeros((len(objects), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for shape in SHAPES:
        sel = [k for k, o in enumerate(objects) if o.shape == shape]
        if not sel:
            continue
        objs = [objects[k] for k in sel]
        sd = signed_distance(
            shape,
            np.array([o.cx for o in objs]),
            np.array([o.cy for o in objs]),
            np.array([o.radius for o in objs]),
            np.array([o.angle for o in objs]),
        )
        alpha[sel] = np.clip(0.5 - sd, 0.0, 1.0)
    return alpha


def _composite(images: np.ndarray, index: np.ndarray, objects: list[ObjectSpec]) -> None:
    """Paint ``objects[k]`` over ``images[index[k]]`` in place (float32 images)."""
    alpha = coverage(objects)[..., None]
    fg = np.array([COLOURS[o.colour] for o in objects], np.float32)[:, None, None, :]
    images[index] = images[index] * (1.0 - alpha) + fg * alpha


def _paint(specs: Sequence[tuple[str, tuple[ObjectSpec, ...]]]) -> np.ndarray:
    n = len(specs)
    bg = np.array([COLOURS[b] for b, _ in specs], np.float32)
    images = np.broadcast_to(bg[:, None, None, :], (n, IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
    # Paint layer by layer so a second object always lies over the first.
    layer = 0
    while True:
        idx = np.array([i for i, (_, objs) in enumerate(specs) if len(objs) > layer], dtype=int)
        if idx.size == 0:
            break
        _composite(images, idx, [specs[i][1][layer] for i in idx])
        layer += 1
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def render_scene(seed: int, tier: int = 1, caption_style: str = "random") -> Scene:
    """Render one scene, deterministically from ``seed`` (and ``tier``)."""
    background, objects, caption, named, relation = sample_scene_spec(seed, tier, caption_style)
    image = _paint([(background, objects)])[0]
    return Scene(image, caption, background, objects, tier, named, relation)


def render_batch(
    seeds: Iterable[int], tier: int | Sequence[int] = 1, caption_style: str = "random",
    name_probability: float = NAME_PROBABILITY,
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """Render many scenes at once: ``(images (N,64,64,3) uint8, captions, scenes)``.

    ``tier`` is one tier for all seeds or one per seed (to mix tiers in a batch).
    """
    seeds = [int(s) for s in seeds]
    tiers = [tier] * len(seeds) if isinstance(tier, int) else [int(t) for t in tier]
    if len(tiers) != len(seeds):
        raise ValueError("one tier per seed is needed")
    specs = [sample_scene_spec(s, t, caption_style, name_probability)
             for s, t in zip(seeds, tiers, strict=True)]
    if not specs:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), [], []
    images = _paint([(bg, objs) for bg, objs, *_ in specs])
    scenes = [
        Scene(images[i], cap, bg, objs, t, named, rel)
        for i, ((bg, objs, cap, named, rel), t) in enumerate(zip(specs, tiers, strict=True))
    ]
    return images, [s.caption for s in scenes], scenes


def render_from_specs(
    backgrounds: Sequence[str], objects: Sequence[Sequence[ObjectSpec]]
) -> np.ndarray:
    """Render explicit scenes (N,64,64,3) uint8; used to build evaluation references."""
    return _paint([(b, tuple(o)) for b, o in zip(backgrounds, objects, strict=True)])
