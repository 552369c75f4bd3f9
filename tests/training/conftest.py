from __future__ import annotations

from pathlib import Path

import pytest

TINY = ["--preset", "tiny", "--batch-size", "2", "--cache-size", "8", "--threads", "1",
        "--device", "cpu"]


@pytest.fixture(scope="session")
def tiny_trained_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline folder made by two steps of the diffusion trainer at its tiny preset."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from studio.training.__main__ import main

    out = tmp_path_factory.mktemp("diffusion") / "shapes-diffusion"
    assert main(["shapes-diffusion", "--steps", "2", "--out", str(out), *TINY]) == 0
    return out
