import math

import pytest
import torch

from studio.core.latent import (
    PARALLEL_DOT,
    activation_directions,
    apply_directions,
    grid_coords,
    interpolate,
    lerp,
    loop_path,
    pca,
    plane_through,
    seeded_normal,
    slerp,
    truncate,
)


def test_lerp_and_slerp_endpoints_are_exact():
    a, b = seeded_normal(1, (4, 8, 8)), seeded_normal(2, (4, 8, 8))
    for mode in ("lerp", "slerp"):
        frames = interpolate(a, b, 9, mode)
        assert frames.shape == (9, 4, 8, 8)
        assert torch.equal(frames[0], a) and torch.equal(frames[-1], b)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)


def test_slerp_keeps_norms_and_lerp_does_not():
    a = seeded_normal(3, (256,))
    b = seeded_normal(4, (256,))
    b = b / b.norm() * a.norm()
    mid_s = slerp(a, b, 0.5)
    mid_l = lerp(a, b, 0.5)
    assert mid_s.norm() == pytest.approx(a.norm().item(), rel=1e-5)
    # Two near-orthogonal Gaussian vectors: lerp's midpoint shrinks by about 1/sqrt(2).
    assert mid_l.norm() < 0.8 * a.norm()
    norms = interpolate(a, b, 11, "slerp").flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, a.norm().item()), rtol=1e-5)


def test_slerp_moves_at_constant_angular_speed():
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([0.0, 1.0])
    frames = interpolate(a, b, 5, "slerp")
    angles = torch.atan2(frames[:, 1], frames[:, 0])
    assert torch.allclose(angles, torch.linspace(0, math.pi / 2, 5), atol=1e-6)


def test_nearly_parallel_fallback_weights_the_right_way_round():
    # A1111's seed travel returns low * t + high * (1 - t) here, so t = 0 gives `high`.
    a = torch.tensor([1.0, 0.0, 0.0])
    b = torch.tensor([1.0, 1e-3, 0.0])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > PARALLEL_DOT
    near_a = slerp(a, b, 0.1)
    assert torch.allclose(near_a, 0.9 * a + 0.1 * b, atol=1e-7)
    assert (near_a - a).norm() < (near_a - b).norm()
    assert torch.equal(slerp(a, b, 0.0), a)


def test_slerp_rejects_shape_mismatch_and_unknown_mode():
    with pytest.raises(ValueError, match="shape"):
        slerp(torch.zeros(3), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="mode"):
        interpolate(torch.ones(3), torch.ones(3), 4, "cubic")


def test_seeded_normal_is_deterministic_and_independent_of_global_rng():
    torch.manual_seed(0)
    x = seeded_normal(42, (16,))
    torch.randn(100)
    assert torch.equal(x, seeded_normal(42, (16,)))
    assert not torch.equal(x, seeded_normal(43, (16,)))


def test_truncation_psi_zero_is_the_mean_and_one_is_identity():
    z = seeded_normal(5, (8,))
    mean = torch.full((8,), 0.5)
    assert torch.equal(truncate(z, mean, 0.0), mean)
    assert torch.allclose(truncate(z, mean, 1.0), z)
    half = truncate(z, mean, 0.5)
    assert torch.allclose(half - mean, 0.5 * (z - mean))


def test_grid_coords_cover_the_extent_top_row_first():
    c = grid_coords(3, 2.0)
    assert c.shape == (9, 2)
    assert c[0].tolist() == [-2.0, 2.0]
    assert c[-1].tolist() == [2.0, -2.0]


def test_plane_through_three_points_contains_them():
    a, b, c = (seeded_normal(s, (4, 4)) for s in (1, 2, 3))
    plane = plane_through(a, b, c)
    assert abs(float((plane.u * plane.v).sum())) < 1e-5
    for p in (a, b, c):
        x, y = plane.coords(p)
        assert torch.allclose(plane.point(x, y), p, atol=1e-5)
    coords = torch.tensor([plane.coords(a), plane.coords(c)])
    assert torch.allclose(plane.points(coords)[1], c, atol=1e-5)
    with pytest.raises(ValueError, match="line"):
        plane_through(a, b, 2 * b - a)


def test_pca_finds_the_axis_of_largest_spread():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2000, 5, generator=g) * torch.tensor([0.1, 3.0, 0.2, 1.0, 0.1])
    d = pca(data, 2)
    assert d.vectors.shape == (2, 5)
    assert abs(d.vectors[0, 1]) > 0.99 and abs(d.vectors[1, 3]) > 0.99
    assert d.stds[0] == pytest.approx(3.0, rel=0.1)
    assert torch.equal(d.vectors, pca(data, 2).vectors)


def test_activation_directions_map_back_to_latent_space():
    # Activations that copy latent dimension 2 with a large gain: the first
    # direction carried back to z must point along dimension 2.
    z = seeded_normal(0, (1000, 6))
    acts = torch.cat([10 * z[:, 2:3], 0.1 * z], dim=1)
    d = activation_directions(z, acts, 2)
    assert abs(d.vectors[0, 2]) > 0.99
    moved = apply_directions(torch.zeros(6), d.vectors, d.stds, [2.0])
    assert moved.norm() == pytest.approx(2 * d.stds[0].item(), rel=1e-5)


def test_loop_path_is_closed():
    keys = [seeded_normal(i, (8,)) for i in range(3)]
    path = loop_path(keys, 12)
    assert path.shape == (12, 8)
    assert torch.equal(path[0], keys[0])
    assert torch.equal(path[4], keys[1])
