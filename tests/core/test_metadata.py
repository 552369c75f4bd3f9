import json

import pytest
from PIL import Image

from studio.core.errors import UserError
from studio.core.jobs import TextToImage
from studio.core.metadata import (
    format_parameters,
    parameters_to_request,
    parse_parameters,
    png_info,
    quote,
    read_png_parameters,
    read_png_request,
    request_from_png,
    sampler_key,
    short_hash,
)

# As A1111 1.6 writes it: a two-line prompt with weights, a negative prompt, and
# quoted extras holding commas and colons.
A1111_EXAMPLE = """masterpiece, best quality, 1girl, (smile:1.2),
looking at viewer, <lora:add_detail:0.6>
Negative prompt: lowres, bad anatomy, (worst quality:1.4), easynegative
Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 2615383765, Size: 512x768, \
Model hash: 7f96a1a9ca, Model: anything-v5, Denoising strength: 0.5, Clip skip: 2, \
Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54, \
more_details: 3b8aa1d351ef", TI hashes: "easynegative: c74b4e810b03", Version: v1.6.0"""


def test_parses_a_real_a1111_string():
    p = parse_parameters(A1111_EXAMPLE)
    assert p["Prompt"] == (
        "masterpiece, best quality, 1girl, (smile:1.2),\nlooking at viewer, <lora:add_detail:0.6>"
    )
    assert p["Negative prompt"] == "lowres, bad anatomy, (worst quality:1.4), easynegative"
    assert p["Steps"] == "28"
    assert p["Sampler"] == "DPM++ 2M Karras"
    assert p["CFG scale"] == "7"
    assert p["Seed"] == "2615383765"
    assert (p["Size-1"], p["Size-2"]) == ("512", "768")
    assert p["Model hash"] == "7f96a1a9ca"
    assert p["Model"] == "anything-v5"
    assert p["Lora hashes"] == "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef"
    assert p["TI hashes"] == "easynegative: c74b4e810b03"
    assert p["Version"] == "v1.6.0"

    kwargs = parameters_to_request(p)
    assert kwargs == {
        "prompt": p["Prompt"],
        "negative_prompt": p["Negative prompt"],
        "steps": 28,
        "guidance_scale": 7.0,
        "seed": 2615383765,
        "width": 512,
        "height": 768,
        "scheduler": "dpmpp_2m",
        "guidance_method": "cfg",
        "model": "anything-v5",
    }
    TextToImage(**kwargs)


def test_prompt_only_and_no_parameters_line():
    p = parse_parameters("just a prompt, with a comma")
    assert p["Prompt"] == "just a prompt, with a comma"
    assert p["Negative prompt"] == ""
    assert "Steps" not in p


def test_quote_follows_a1111():
    assert quote("plain") == "plain"
    assert quote(7) == 7
    assert quote("a, b") == '"a, b"'
    assert quote('say "x": y') == '"say \\"x\\": y"'
    assert quote("two\nlines") == '"two\\nlines"'


def test_write_then_parse_round_trip():
    job = TextToImage(
        prompt="a red circle, on the left:\nsecond line",
        negative_prompt="blurry, dark",
        guidance_scale=6.5,
        steps=12,
        scheduler="euler_a",
        seed=123456789,
        width=96,
        height=64,
        model="shapes-diffusion",
    )
    text = format_parameters(job, model_hash="0123456789", model_name="shapes: v1, beta")
    lines = text.split("\n")
    assert lines[-2] == "Negative prompt: blurry, dark"
    assert lines[-1] == (
        "Steps: 12, Sampler: Euler a, CFG scale: 6.5, Seed: 123456789, Size: 96x64, "
        'Model hash: 0123456789, Model: "shapes: v1, beta"'
    )
    kwargs = parameters_to_request(parse_parameters(text))
    assert kwargs["prompt"] == job.prompt
    assert kwargs["negative_prompt"] == job.negative_prompt
    assert kwargs["model"] == "shapes: v1, beta"
    for name in ("guidance_scale", "steps", "scheduler", "seed", "width", "height"):
        assert kwargs[name] == getattr(job, name), name


def test_the_guidance_rule_round_trips_and_defaults_to_cfg(tmp_path):
    text = format_parameters(TextToImage(prompt="x", guidance_method="apg"))
    assert "CFG scale: 7.5, Guidance: APG, Seed" in text
    assert parameters_to_request(parse_parameters(text))["guidance_method"] == "apg"
    # Other tools' images (and ours from before the rule was recorded) were made with CFG.
    assert "Guidance" not in format_parameters(TextToImage(prompt="x"))
    assert parameters_to_request(parse_parameters(A1111_EXAMPLE))["guidance_method"] == "cfg"
    old = TextToImage(prompt="x", seed=3).to_dict()
    del old["guidance_method"]
    path = tmp_path / "old.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info("x\nSeed: 3", old))
    assert request_from_png(path)["guidance_method"] == "cfg"
    # An unknown rule from elsewhere is left out, so the pane keeps its own.
    assert "guidance_method" not in parameters_to_request({"Guidance": "Warp"})


def test_empty_negative_prompt_line_is_omitted_and_whole_cfg_keeps_a_decimal():
    text = format_parameters(TextToImage(prompt="x", guidance_scale=7.0))
    assert "Negative prompt" not in text
    assert "CFG scale: 7.0," in text


def test_png_chunks_survive_a_file(tmp_path):
    job = TextToImage(prompt="ünïcode ☂ prompt", seed=5)
    text = format_parameters(job, "abcdef0123", "tiny")
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(text, job.to_dict()))
    assert read_png_parameters(path)["Prompt"] == "ünïcode ☂ prompt"
    assert read_png_request(path)["seed"] == 5
    kwargs = request_from_png(path)
    assert TextToImage(**kwargs) == TextToImage(prompt="ünïcode ☂ prompt", seed=5)


def test_foreign_png_falls_back_to_a1111_text(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", A1111_EXAMPLE)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert read_png_request(path) is None
    assert request_from_png(path)["scheduler"] == "dpmpp_2m"


def test_png_without_parameters_or_not_an_image(tmp_path):
    bare = tmp_path / "bare.png"
    Image.new("L", (4, 4)).save(bare)
    assert read_png_parameters(bare) == {}
    with pytest.raises(UserError, match="no generation parameters"):
        request_from_png(bare)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(UserError, match="Cannot read"):
        read_png_parameters(junk)


def test_sampler_names_map_both_ways():
    assert sampler_key("Euler a") == "euler_a"
    assert sampler_key("euler_a") == "euler_a"
    assert sampler_key("DPM++ 2M") == "dpmpp_2m"
    assert sampler_key("LCM") == "lcm"
    assert sampler_key("UniPC") is None


def test_short_hash_is_sha256_prefix_and_cached(tmp_path):
    import hashlib

    f = tmp_path / "w.safetensors"
    f.write_bytes(b"weights" * 1000)
    expected = hashlib.sha256(f.read_bytes()).hexdigest()[:10]
    assert short_hash(f) == expected
    from studio.core.metadata import _hash_cache_file

    cache = json.loads(_hash_cache_file().read_text())
    assert cache[str(f.resolve())]["sha256"].startswith(expected)
