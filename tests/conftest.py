"""Every test session measures its own speed choices, in a private cache (not the user's)."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_speed_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["TRANSFORMERKIT_CACHE"] = str(tmp_path_factory.mktemp("transformerkit-cache"))
