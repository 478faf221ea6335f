"""What installing agentlab sets in JupyterLab: every cell rendered (see pyproject.toml).

The wheel puts a drop-in at {sys.prefix}/etc/jupyter/labconfig/default_setting_overrides.d/
agentlab.json, where jupyterlab_server merges it, with every other package's, into the
defaults of the settings schemas. It must not touch share/jupyter/lab/settings/overrides.json,
which belongs to whoever manages the environment. The tests ask jupyterlab_server itself, with
the calls its /lab/api/settings handler makes, so a missing, misplaced or unreadable drop-in
fails them.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")
from jupyterlab.commands import get_app_dir
from jupyterlab_server.settings_utils import _get_overrides, get_settings

DISTRIBUTION = "agentlab-nats"
PLUGIN = "@jupyterlab/notebook-extension:tracker"
DROP_IN = Path("etc", "jupyter", "labconfig", "default_setting_overrides.d", "agentlab.json")


def _installed_files() -> dict[Path, Path]:
    """The distribution's installed files: path relative to sys.prefix -> absolute path."""
    dist = distribution(DISTRIBUTION)
    prefix = Path(sys.prefix).resolve()
    out = {}
    for file in dist.files or []:
        absolute = Path(dist.locate_file(file)).resolve()
        if absolute.is_relative_to(prefix):
            out[absolute.relative_to(prefix)] = absolute
    return out


def test_the_drop_in_is_installed_in_this_environment_and_nothing_else_of_jupyters():
    files = _installed_files()
    assert DROP_IN in files, f"{DISTRIBUTION} did not install {DROP_IN} under {sys.prefix}"
    assert json.loads(files[DROP_IN].read_text()) == {PLUGIN: {"windowingMode": "none"}}
    others = [p for p in files if p.parts[:2] in {("share", "jupyter"), ("etc", "jupyter")}
              and p != DROP_IN]
    assert not others, f"{DISTRIBUTION} installs Jupyter files besides its drop-in: {others}"


@pytest.fixture
def lab_settings(tmp_path, monkeypatch):
    """``lab_settings(app_settings_dir)``: the tracker's settings as JupyterLab would serve
    them, with this environment's config path and an empty user settings directory."""
    # Not the user's ~/.jupyter: only sys.prefix's (and the system's) labconfig directories.
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.delenv("JUPYTER_CONFIG_PATH", raising=False)
    schemas = Path(get_app_dir(), "schemas")
    assert (schemas / "@jupyterlab" / "notebook-extension" / "tracker.json").is_file()

    def settings(app_settings_dir: Path) -> dict:
        overrides, error = _get_overrides(str(app_settings_dir))  # as LabApp's handlers do
        assert not error, error
        result, _ = get_settings(str(app_settings_dir), str(schemas), str(tmp_path / "user"),
                                 schema_name=PLUGIN, overrides=overrides)
        return result

    return settings


def test_jupyterlab_renders_every_cell_of_the_course(lab_settings, tmp_path):
    schema = json.loads(Path(get_app_dir(), "schemas", "@jupyterlab", "notebook-extension",
                             "tracker.json").read_text())
    assert schema["properties"]["windowingMode"]["default"] != "none", \
        "JupyterLab's own default is 'none' now: the drop-in is not needed any more"
    empty = tmp_path / "app-settings"
    empty.mkdir()
    result = lab_settings(empty)
    assert result["schema"]["properties"]["windowingMode"]["default"] == "none"


def test_the_users_own_overrides_json_still_applies_beside_it(lab_settings, tmp_path):
    app_settings = tmp_path / "app-settings"
    app_settings.mkdir()
    (app_settings / "overrides.json").write_text(json.dumps({PLUGIN: {"recordTiming": True}}))
    properties = lab_settings(app_settings)["schema"]["properties"]
    assert properties["recordTiming"]["default"] is True
    assert properties["windowingMode"]["default"] == "none"


def test_the_settings_editor_still_changes_it(lab_settings, tmp_path):
    """It is a default: what a user saves (in ``user_settings_dir``) is what JupyterLab uses."""
    saved = tmp_path / "user" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"windowingMode": "full"}))
    app_settings = tmp_path / "app-settings"
    app_settings.mkdir()
    result = lab_settings(app_settings)
    assert result["schema"]["properties"]["windowingMode"]["default"] == "none"
    assert result["settings"]["windowingMode"] == "full"
