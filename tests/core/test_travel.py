import dataclasses
import time

import numpy as np
import pytest
import torch

from studio.core.engine import Engine
from studio.core.errors import UserError
from studio.core.jobs import Cancelled, PromptTravel, SeedTravel, TextToImage


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.set_num_threads(1)
    e = Engine(device="cpu", options={"outputs_dir": str(tmp_path_factory.mktemp("outputs"))})
    e.start()
    assert e.wait_ready(30)
    yield e
    e.stop()


def _seed(model, **kw):
    base = dict(model=str(model), prompt="a red circle", seed_a=3, seed_b=4, frames=3, steps=2, width=32, height=32)
    return SeedTravel(**{**base, **kw})


def test_seed_travel_endpoints_are_the_image_panes_images(engine, tiny_pipeline):
    travel = engine.run(_seed(tiny_pipeline))
    assert len(travel) == 3 and travel.frames[0].shape == (32, 32, 3)
    for seed, frame in ((3, travel.frames[0]), (4, travel.frames[-1])):
        image = engine.run(TextToImage(model=str(tiny_pipeline), prompt="a red circle", seed=seed, steps=2, width=32, height=32))
        assert np.abs(np.asarray(image.images[0]).astype(int) - frame.astype(int)).max() <= 1
    assert not np.array_equal(travel.frames[1], travel.frames[0])
    assert [p["t"] for p in travel.params] == [0.0, 0.5, 1.0]


def test_apg_travel_endpoints_are_the_image_panes_apg_images(engine, tiny_pipeline):
    travel = engine.run(_seed(tiny_pipeline, frames=2, guidance_method="apg", negative_prompt="blue"))
    plain = engine.run(_seed(tiny_pipeline, frames=2, negative_prompt="blue"))
    image = engine.run(TextToImage(model=str(tiny_pipeline), prompt="a red circle", seed=3, steps=2,
                                   width=32, height=32, guidance_method="apg", negative_prompt="blue"))
    assert np.abs(np.asarray(image.images[0]).astype(int) - travel.frames[0].astype(int)).max() <= 1
    assert not np.array_equal(travel.frames[0], plain.frames[0])
    with pytest.raises(UserError, match="Unknown guidance"):
        engine.run(_seed(tiny_pipeline, guidance_method="warp"))


def test_every_frame_reproduces_from_its_parameters(engine, tiny_pipeline):
    five = engine.run(_seed(tiny_pipeline, frames=5, scheduler="euler_a"))
    alone = engine.run(_seed(tiny_pipeline, at=(five.params[2]["t"],), scheduler="euler_a"))
    assert len(alone) == 1
    assert np.array_equal(alone.frames[0], five.frames[2])


def test_prompt_travel_interpolates_embeddings(engine, tiny_pipeline):
    job = PromptTravel(model=str(tiny_pipeline), prompt_a="a red circle", prompt_b="a blue square",
                       seed_a=5, frames=3, steps=2, width=32, height=32)
    travel = engine.run(job)
    assert len(travel) == 3
    a = engine.run(TextToImage(model=str(tiny_pipeline), prompt="a blue square", seed=5, steps=2, width=32, height=32))
    assert np.abs(np.asarray(a.images[0]).astype(int) - travel.frames[-1].astype(int)).max() <= 1
    assert not np.array_equal(travel.frames[0], travel.frames[-1])
    with_seeds = engine.run(dataclasses.replace(job, seed_b=6))
    assert np.array_equal(with_seeds.frames[0], travel.frames[0])
    assert not np.array_equal(with_seeds.frames[-1], travel.frames[-1])


def test_travel_cancel_and_bad_input(engine, tiny_pipeline):
    handle = engine.submit(_seed(tiny_pipeline, frames=50, steps=5))
    deadline = time.monotonic() + 30
    while engine.running_job is None and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.cancel_running()
    end = handle.wait(30)
    assert isinstance(end, Cancelled), end
    with pytest.raises(UserError, match="at least 2 frames"):
        engine.run(_seed(tiny_pipeline, frames=1))
    with pytest.raises(UserError, match="multiples? of 8"):
        engine.run(_seed(tiny_pipeline, width=36))
    assert len(engine.run(_seed(tiny_pipeline, frames=2, steps=1))) == 2


def test_cli_travel_gif_frame_count(tiny_pipeline, tmp_path, capsys):
    from PIL import Image

    from studio.cli import main

    out = tmp_path / "travel.gif"
    args = ["travel", "--model", str(tiny_pipeline), "--frames", "4", "--steps", "1", "--width", "32", "--height", "32", "--device", "cpu"]
    assert main([*args, "--prompt", "a red circle", "--seed-a", "1", "--seed-b", "2", "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (32, 32)
    assert "4 frames of 32×32" in capsys.readouterr().out
    assert main([*args, "--prompt-a", "a red circle", "--prompt-b", "a blue square", "-o", str(tmp_path / "p.png")]) == 0
    assert Image.open(tmp_path / "p.png").size == (4 * 32, 32)
    assert main([*args, "--prompt-a", "only one", "-o", str(out)]) == 1
    assert "both --prompt-a and --prompt-b" in capsys.readouterr().err
    assert main([*args, "--prompt", "a red circle", "--guidance", "cfg", "-o", str(tmp_path / "c.gif")]) == 0
    assert main([*args, "--prompt", "a red circle", "--guidance", "warp", "-o", str(out)]) == 1
    assert "Unknown guidance 'warp'" in capsys.readouterr().err
