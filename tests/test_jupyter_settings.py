"""What installing agentlab sets in JupyterLab: every cell rendered (see pyproject.toml)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def test_jupyterlab_renders_every_cell_of_the_course():
    overrides = Path(sys.prefix, "share", "jupyter", "lab", "settings", "overrides.json")
    assert overrides.is_file(), f"{overrides} was not installed with agentlab"
    settings = json.loads(overrides.read_text())
    assert settings["@jupyterlab/notebook-extension:tracker"]["windowingMode"] == "none"
