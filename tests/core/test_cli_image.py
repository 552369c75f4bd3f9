import json

import pytest

from studio.cli import main
from studio.core.metadata import parse_parameters, read_png_text


@pytest.fixture
def outputs(tmp_path):
    return tmp_path / "outputs"


def _generate(tiny_pipeline, outputs, *extra):
    return main(
        [
            "generate",
            "--model",
            str(tiny_pipeline),
            "--prompt",
            "a red circle",
            "--steps",
            "2",
            "--width",
            "32",
            "--height",
            "32",
            "--outputs-dir",
            str(outputs),
            *extra,
        ]
    )


def test_generate_writes_a_png_whose_metadata_parses(tiny_pipeline, outputs, tmp_path, capsys):
    out = tmp_path / "out.png"
    code = _generate(tiny_pipeline, outputs, "--seed", "11", "--negative", "blue", "--guidance", "apg",
                     "-o", str(out))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == f"{out}\tseed 11"
    assert "step 2/2" in captured.err
    params = parse_parameters(read_png_text(out)["parameters"])
    assert (params["Prompt"], params["Negative prompt"], params["Seed"]) == (
        "a red circle",
        "blue",
        "11",
    )
    assert params["Guidance"] == "APG"
    assert len(list(outputs.glob("*.png"))) == 1

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "Prompt: a red circle" in info and "Size: 32x32" in info and "Seed: 11" in info
    assert main(["info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["request"]["seed"] == 11


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seed", "abc"], "The seed must be a whole number, not 'abc'."),
        (["--width", "60"], "multiple of 8"),
        (["--cfg", "nan"], "CFG scale must be a finite number"),
        (["--steps", "0"], "Steps must be"),
        (["--scheduler", "warp"], "Unknown scheduler"),
        (["--guidance", "warp"], "Unknown guidance"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(tiny_pipeline, outputs, capsys, extra, message):
    assert _generate(tiny_pipeline, outputs, *extra) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not outputs.exists()


def test_bad_model_exits_non_zero(tmp_path, outputs, capsys):
    assert _generate(tmp_path / "missing-model", outputs, "--quiet") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err
    assert len(err.splitlines()) == 1


def test_info_on_a_png_without_parameters(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert main(["info", str(tmp_path / "plain.png")]) == 1
    assert "carries no generation parameters" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "none.png")]) == 1


def test_models_lists_what_the_picker_lists(tiny_pipeline, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_STUDIO_MODELS", str(tiny_pipeline.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {
        "name": tiny_pipeline.name,
        "kind": "diffusers-pipeline",
        "source": "bundled",
        "path": str(tiny_pipeline),
    } in listed
    assert main(["models", "--kind", "nonsense"]) == 1
