"""The training image installs the project with the same steps as scripts/setup.sh, which the test suite runs on."""

from __future__ import annotations

import re

import pytest
from sagemaker_emulator import REPO_ROOT

pytestmark = pytest.mark.sagemaker


def test_image_installs_like_the_setup_script():
    dockerfile = (REPO_ROOT / "docker/Dockerfile").read_text()
    setup = (REPO_ROOT / "scripts/setup.sh").read_text()
    uv_pin = re.compile(r'"uv==([0-9.]+)"')
    assert uv_pin.findall(dockerfile) == uv_pin.findall(setup) != []
    assert "FROM python:3.12" in dockerfile
    for step in ("uv pip install", "-r requirements.lock", "--no-deps -e ."):
        assert step in dockerfile and step in setup
    # The dependencies are installed from the lock before the source is copied in.
    assert dockerfile.index("-r requirements.lock") < dockerfile.index("COPY . .") < dockerfile.index("--no-deps -e .")
    # ... and compiled to bytecode as they are installed, not at every fresh container's first import.
    assert re.search(r"^\s*UV_COMPILE_BYTECODE=1", dockerfile, re.MULTILINE)
    assert dockerfile.index("UV_COMPILE_BYTECODE=1") < dockerfile.index("-r requirements.lock")
