"""Bundle tests build the whole app (minutes), so they run only when asked for:

    python -m pytest -m packaging tests/packaging

and only where PyInstaller is installed (pip install -e ".[package]").
LATENT_STUDIO_BUNDLE=dist/latent-studio tests an existing bundle instead of building one.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "packaging" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="builds the app bundle: run with -m packaging")
    for item in items:
        if "packaging" in item.keywords:
            item.add_marker(skip)
