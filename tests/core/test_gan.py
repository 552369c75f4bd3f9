import json
import threading
import time

import numpy as np
import pytest
import torch

from studio.core.engine import CallJob, Engine
from studio.core.errors import UserError
from studio.core.gan import (
    DirectionSet,
    early_layer,
    load_directions,
    load_generator,
    save_directions,
    torchscript_z_dim,
)
from studio.core.jobs import (
    Cancelled,
    Finished,
    GanDirections,
    GanEdit,
    GanInterpolate,
    GanSample,
    GanWalk,
)

TINY_GAN = {"architecture": "dcgan", "z_dim": 8, "channels": 3, "image_size": 16, "base_channels": 8}


def make_dcgan(folder, seed=0, **overrides):
    """A tiny random DCGAN in the bundled format (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    from studio.training.gan_model import build_generator

    config = {**TINY_GAN, **overrides}
    torch.manual_seed(seed)
    gen = build_generator(config)
    # Fresh batch-norm statistics would make every sample nearly the same.
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.05)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


class _ScriptGen(torch.nn.Module):
    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(z_dim, 3 * 8 * 8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(-1, 3, 8, 8)


class _Raising(torch.nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[0] > 0:
            raise RuntimeError("this generator is broken on purpose")
        return z


def make_torchscript(path, z_dim=6, metadata=True, module=None):
    torch.manual_seed(0)
    scripted = torch.jit.script(module if module is not None else _ScriptGen(z_dim))
    extra = {"metadata.json": json.dumps({"z_dim": z_dim})} if metadata else {}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    e = Engine(device="cpu")
    e.start()
    assert e.wait_ready(30)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    return str(make_dcgan(tmp_path_factory.mktemp("gan") / "tiny-gan"))


def test_samples_are_deterministic_by_seed_and_independent_of_the_page(engine, gan):
    page = engine.run(GanSample(model=gan, seeds=(3, 4, 5, 6)))
    alone = engine.run(GanSample(model=gan, seeds=(5,)))
    again = engine.run(GanSample(model=gan, seeds=(3, 4, 5, 6)))
    assert len(page) == 4 and page.frames[0].shape == (16, 16, 3) and page.frames[0].dtype == np.uint8
    assert np.array_equal(page.frames[2], alone.frames[0])
    assert all(np.array_equal(x, y) for x, y in zip(page.frames, again.frames, strict=True))
    assert not np.array_equal(page.frames[0], page.frames[1])
    assert page.labels == ("3", "4", "5", "6")


def test_truncation_zero_gives_the_mean_sample_for_every_seed(engine, gan):
    out = engine.run(GanSample(model=gan, seeds=(0, 1, 2), truncation=0.0))
    gen = load_generator(gan)
    mean = ((gen.generate(torch.zeros(1, 8))[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    for frame in out.frames:
        assert np.array_equal(frame, mean)
    half = engine.run(GanSample(model=gan, seeds=(0,), truncation=0.5)).frames[0]
    full = engine.run(GanSample(model=gan, seeds=(0,), truncation=1.0)).frames[0]
    assert not np.array_equal(half, full)


def test_interpolation_and_walk_frames(engine, gan):
    interp = engine.run(GanInterpolate(model=gan, seed_a=1, seed_b=2, frames=5))
    ends = engine.run(GanSample(model=gan, seeds=(1, 2)))
    assert len(interp) == 5
    assert np.array_equal(interp.frames[0], ends.frames[0])
    assert np.array_equal(interp.frames[-1], ends.frames[1])
    walk = engine.run(GanWalk(model=gan, seed=0, frames=8, keypoints=4))
    assert len(walk) == 8
    assert np.array_equal(walk.frames[0], engine.run(GanSample(model=gan, seeds=(0,))).frames[0])


def test_pca_directions_edit_the_sample_and_round_trip_json(engine, gan, tmp_path):
    for source in ("latent", "activations"):
        dirs = engine.run(GanDirections(model=gan, source=source, count=3, samples=300))
        assert isinstance(dirs, DirectionSet) and dirs.source == source
        assert len(dirs.vectors) == 3 and len(dirs.vectors[0]) == 8
        norms = np.linalg.norm(np.array(dirs.vectors), axis=1)
        assert np.allclose(norms, 1, atol=1e-4)
    base = engine.run(GanEdit(model=gan, seed=4))
    still = engine.run(GanEdit(model=gan, seed=4, directions=dirs.vectors, stds=dirs.stds, amounts=(0, 0, 0)))
    moved = engine.run(GanEdit(model=gan, seed=4, directions=dirs.vectors, stds=dirs.stds, amounts=(3, 0, 0)))
    assert np.array_equal(base.image, still.image)
    assert not np.array_equal(base.image, moved.image)
    named = dirs.renamed(0, "roundness")
    path = save_directions(named, tmp_path / "dirs" / "tiny.json")
    back = load_directions(path)
    assert back.names[0] == "roundness" and back.z_dim == 8
    assert np.allclose(back.vectors, named.vectors)
    (tmp_path / "bad.json").write_text("{\"directions\": 3}")
    with pytest.raises(UserError, match="not a saved set"):
        load_directions(tmp_path / "bad.json")


def test_layered_generator_samples_and_its_directions_read_the_mapping(engine, tmp_path):
    from studio.training import world

    palette = [list(rgb) for rgb in world.COLOURS.values()]
    model = str(make_dcgan(tmp_path / "layered", layered=True, palette=palette, mapping_width=16,
                           template_radius=6.0))
    page = engine.run(GanSample(model=model, seeds=(0, 1, 2)))
    assert page.frames[0].shape == (16, 16, 3) and not np.array_equal(page.frames[0], page.frames[1])
    # The early layer GANSpace reads is the mapping MLP's first activation.
    module = load_generator(model).module
    assert early_layer(module) is module.mapping[1]
    dirs = engine.run(GanDirections(model=model, source="activations", count=2, samples=300))
    assert len(dirs.vectors) == 2 and len(dirs.vectors[0]) == 8
    moved = engine.run(GanEdit(model=model, seed=1, directions=dirs.vectors, stds=dirs.stds,
                               amounts=(3, 0)))
    assert not np.array_equal(moved.image, page.frames[1])


def test_torchscript_generator_with_metadata(engine, tmp_path):
    path = make_torchscript(tmp_path / "gen.pt", z_dim=6)
    assert torchscript_z_dim(path) == 6
    out = engine.run(GanSample(model=str(path), seeds=(0, 1)))
    assert out.frames[0].shape == (8, 8, 3)
    # PCA over activations is not possible inside TorchScript: it says so and uses latents.
    dirs = engine.run(GanDirections(model=str(path), count=2, samples=50))
    assert dirs.source == "latent" and "TorchScript" in dirs.notices[0]


def test_torchscript_without_metadata_needs_z_size(engine, tmp_path):
    path = make_torchscript(tmp_path / "bare.pt", z_dim=5, metadata=False)
    assert torchscript_z_dim(path) == 0
    with pytest.raises(UserError, match="z size"):
        engine.run(GanSample(model=str(path), seeds=(0,)))
    assert engine.run(GanSample(model=str(path), seeds=(0,), z_dim=5)).frames[0].shape == (8, 8, 3)
    with pytest.raises(UserError, match="failed on z of size 7"):
        engine.run(GanSample(model=str(path), seeds=(0,), z_dim=7))


def test_bad_generators_give_clear_messages_and_the_engine_lives_on(engine, gan, tmp_path):
    raising = make_torchscript(tmp_path / "raise.pt", z_dim=4, module=_Raising())
    with pytest.raises(UserError, match="broken on purpose"):
        engine.run(GanSample(model=str(raising), seeds=(0,)))
    wrong = make_dcgan(tmp_path / "wrong")
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "base_channels": 16}))
    with pytest.raises(UserError, match="do not match"):
        engine.run(GanSample(model=str(wrong), seeds=(0,)))
    (tmp_path / "notgan.pt").write_bytes(b"not a zip")
    with pytest.raises(UserError):
        engine.run(GanSample(model=str(tmp_path / "notgan.pt"), seeds=(0,)))
    assert len(engine.run(GanSample(model=gan, seeds=(0,)))) == 1


def test_interactive_lane_drops_stale_requests(engine):
    """While a slow request renders, newer ones replace each other; only the newest
    runs next, and a result made stale during its run is dropped."""
    ran = []
    gate = threading.Event()

    class Slow(CallJob):
        lane = "test-slow"

    def slow(tag, wait=False):
        def fn(ctx):
            ran.append(tag)
            if wait:
                gate.wait(5)
            else:
                time.sleep(0.02)
            return tag

        return fn

    first = engine.submit(Slow(fn=slow("first", wait=True)))
    deadline = time.monotonic() + 5
    while "first" not in ran and time.monotonic() < deadline:
        time.sleep(0.005)
    middle = [engine.submit(Slow(fn=slow(f"m{i}"))) for i in range(20)]
    last = engine.submit(Slow(fn=slow("last")))
    gate.set()
    assert last.result(5) == "last"
    assert isinstance(first.wait(5), Cancelled)  # newer requests arrived while it ran
    assert all(isinstance(h.wait(5), Cancelled) for h in middle)
    assert ran == ["first", "last"]
    assert isinstance(engine.submit(Slow(fn=slow("alone"))).wait(5), Finished)


def test_cli_sample_gan_grid_and_seeds(gan, tmp_path, capsys):
    from PIL import Image

    from studio.cli import main
    from studio.cli.latent import parse_seeds

    assert parse_seeds("0-3,10") == (0, 1, 2, 3, 10)
    with pytest.raises(UserError):
        parse_seeds("5-1")
    out = tmp_path / "grid.png"
    assert main(["sample-gan", "--model", gan, "--seeds", "0-15", "--truncation", "0.7", "-o", str(out)]) == 0
    assert Image.open(out).size == (64, 64)
    assert main(["sample-gan", "--model", gan, "--seeds", "0-5", "--columns", "6", "-o", str(tmp_path / "row.png")]) == 0
    assert Image.open(tmp_path / "row.png").size == (96, 16)
    assert main(["sample-gan", "--model", gan, "--seeds", "x", "-o", str(out)]) == 1
    assert "Cannot read seeds" in capsys.readouterr().err


def test_directions_ignore_interactive_renders_served_meanwhile(engine, gan):
    """PCA progress serves the interactive lane; those renders run through the same
    generator and must not add rows to the activations."""
    handle = engine.submit(GanDirections(model=gan, source="activations", count=2, samples=1024))
    edits = [engine.submit(GanEdit(model=gan, seed=s)) for s in range(20)]
    assert len(handle.result(30).vectors) == 2
    assert isinstance(edits[-1].wait(10), Finished)
