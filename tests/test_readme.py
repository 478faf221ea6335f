"""The README's Python example runs as printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    example = text.split("## In a notebook or a script", 1)[1].split("```python", 1)[1]
    example = example.split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["{'hello': 'cto'}", "{'status': 'ready'}",
                                        "{'title': 'Design the API'} 1"]
