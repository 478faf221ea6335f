"""Build the course site: every notebook executed, every live view's final state kept.

    .venv/bin/python docs/tools/build.py                 # what `make docs` runs: site/
    .venv/bin/python docs/tools/build.py --site /tmp/site --only 04-meetings

The committed notebooks carry no outputs (tests/test_notebooks.py checks it); the site
carries them. Each course notebook (the index, the numbered lessons, the dashboard) runs
top to bottom in a fresh kernel of this interpreter, on an embedded nats-server of its own,
like a learner's Run All. Then one more cell, added in memory only, asks that kernel what
each displayed widget shows at that moment (``agentlab.widgets.static_snapshots``), and
the executed copy gets those snapshots in place of the widget references: HTML and SVG
rendered by the views themselves (the flow's Mermaid source too), which a page without a
kernel shows as they are. A cell that fails stops the build with the notebook, the cell
and the error.

The copies, the README (as the home page) and docs/*.md are laid out in --work (build/docs)
as they sit in the repository, so every relative link keeps its meaning; a link to a file
that is not on the site leads to the repository instead. MkDocs Material (mkdocs.yml) with
mkdocs-jupyter turns them into --site. Nothing is fetched from the network at build time or
by the pages for their diagrams.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
COURSE = ROOT / "notebooks"
COURSE_NAME = re.compile(r"^(index|dashboard|\d\d-[a-z0-9-]+)\.ipynb$")
PAGES = ("docs/architecture.md", "docs/operations.md", "docs/protocol.md")
STATIC = ("docs/asyncapi.json", "docs/images")
CELL_TIMEOUT = 120  # seconds; a lesson promises under 60 for all its cells
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
SNAPSHOT_CELL = """\
from IPython.display import display as _display
from agentlab.widgets import static_snapshots as _static_snapshots
_display({{"application/json": _static_snapshots({ids!r})}}, raw=True)
"""


class BuildError(Exception):
    """The build stopped; the message names the notebook and the cell."""


def course_notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted((p for p in COURSE.glob("*.ipynb") if COURSE_NAME.match(p.name)),
                   key=lambda p: (p.stem != "index", p.stem == "dashboard", p.stem))
    if not only:
        return found
    wanted = [p for p in found if p.stem in only or p.name in only]
    missing = set(only) - {p.stem for p in wanted} - {p.name for p in wanted}
    if missing:
        raise BuildError(f"--only {' '.join(sorted(missing))}: no such course notebook in "
                         f"{COURSE} (there are {', '.join(p.stem for p in found)})")
    return wanted


# -- running a notebook --------------------------------------------------------------------
def this_interpreter_kernel(work: Path) -> str:
    """A kernelspec that runs this very interpreter, found first through JUPYTER_PATH, so
    the kernels import this venv's agentlab whatever other kernelspecs say."""
    name = "agentlab-docs"
    spec = work / "jupyter" / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "agentlab docs build", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(work / "jupyter"), os.environ.get("JUPYTER_PATH")) if p)
    return name


def kernel_env() -> dict[str, str]:
    # Each notebook on an embedded server of its own, whatever this shell points at.
    return {k: v for k, v in os.environ.items()
            if k not in ("AGENTLAB_NATS_URL", "AGENTLAB_NATS_CREDENTIALS")}


def execute(path: Path, kernel: str) -> tuple[nbformat.NotebookNode, int]:
    """Run the notebook; put each widget output's final snapshot in place of the widget.
    Returns the executed notebook and how many outputs got a snapshot."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel,
                            store_widget_state=False,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel(env=kernel_env()):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            except CellExecutionError as error:
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the traceback's colours
                raise BuildError(f"{path.name}: cell {index} ({first!r}) failed:\n"
                                 f"{plain}") from None
        ids = [output["data"][WIDGET_VIEW]["model_id"] for output in _widget_outputs(nb)]
        probe = nbformat.v4.new_code_cell(SNAPSHOT_CELL.format(ids=ids))
        nb.cells.append(probe)  # nbclient stores a cell by its index: there for this cell only
        try:
            client.execute_cell(probe, len(nb.cells) - 1)
        finally:
            nb.cells.pop()
    answers = [o for o in probe.outputs if "application/json" in o.get("data", {})]
    if not answers:
        raise BuildError(f"{path.name}: the kernel did not answer with the views' snapshots: "
                         f"{probe.outputs}")
    return nb, _put_snapshots(nb, answers[0]["data"]["application/json"])


def _widget_outputs(nb: nbformat.NotebookNode) -> list[Any]:
    return [output for cell in nb.cells if cell.cell_type == "code"
            for output in cell.outputs if WIDGET_VIEW in output.get("data", {})]


def _put_snapshots(nb: nbformat.NotebookNode, snapshots: dict[str, dict[str, str]]) -> int:
    """Each widget output: its snapshot instead of the widget reference, which a page
    without a kernel cannot fill (a widget that holds no view keeps its text)."""
    put = 0
    for output in _widget_outputs(nb):
        data = output["data"]
        snapshot = snapshots.get(data.pop(WIDGET_VIEW)["model_id"])
        if snapshot:
            data.update(snapshot)
            put += 1
    nb.metadata.pop("widgets", None)
    return put


# -- laying out the pages ------------------------------------------------------------------
def page_url(repo_path: str) -> str:
    """Where MkDocs (use_directory_urls) puts the page of a file of the repository."""
    if repo_path == "README.md":
        return ""
    stem = posixpath.splitext(repo_path)[0]
    if posixpath.basename(stem) == "index":
        return posixpath.dirname(stem) + "/" if posixpath.dirname(stem) else ""
    return stem + "/"


def rewrite_links(text: str, source: str, staged: set[str], repo_url: str, *,
                  as_page: bool) -> str:
    """Links of ``source`` (a repository path): to a file not on the site, the repository's
    copy; with ``as_page`` (a notebook, whose HTML MkDocs does not touch), every other link
    turned into the site's URL as well, relative to the page."""
    here = posixpath.dirname(source)

    def fix(match: re.Match[str]) -> str:
        target = match.group(2)
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or target.startswith("#") or not parts.path:
            return match.group(0)
        path = posixpath.normpath(posixpath.join(here, parts.path))
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        if path.startswith("../"):
            return match.group(0)
        if path not in staged and not any(path.startswith(f"{s}/") for s in staged):
            return f"{match.group(1)}{repo_url}/blob/HEAD/{path}{fragment}{match.group(3)}"
        if not as_page:
            return match.group(0)
        is_page = path.endswith((".md", ".ipynb"))
        to = page_url(path) if is_page else path
        new = posixpath.relpath(to or ".", page_url(source) or ".")
        new += "/" if is_page and not new.endswith("/") and new != "." else ""
        return f"{match.group(1)}{'./' if new == '.' else new}{fragment}{match.group(3)}"

    return LINK.sub(fix, text)


def lay_out(work: Path, executed: dict[str, nbformat.NotebookNode], repo_url: str) -> None:
    staged = {"README.md", *PAGES, *STATIC, *executed}
    for name in (*PAGES, "README.md"):
        text = rewrite_links((ROOT / name).read_text(), name, staged, repo_url, as_page=False)
        target = work / ("index.md" if name == "README.md" else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for name in STATIC:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, work / name)
    for name, nb in executed.items():
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = rewrite_links(cell.source, name, staged, repo_url, as_page=True)
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, work / name)


def mkdocs_build(config: Any, work: Path) -> None:
    from mkdocs.commands.build import build

    listed = {page for page in _nav_files(config["nav"])}
    unlisted = sorted(p.relative_to(work).as_posix() for p in (work / "notebooks").glob(
        "*.ipynb") if p.relative_to(work).as_posix() not in listed)
    if unlisted:
        raise BuildError(f"mkdocs.yml's nav does not list {', '.join(unlisted)}: add them")
    build(config)


def _nav_files(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in _nav_files(value)]
    if isinstance(nav, list):
        return [f for item in nav for f in _nav_files(item)]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default=str(ROOT / "site"), help="the site (default: site/)")
    parser.add_argument("--work", default=str(ROOT / "build" / "docs"),
                        help="the pages before MkDocs (default: build/docs/)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                        help="these course notebooks only (names without .ipynb)")
    args = parser.parse_args(argv)
    work, site = Path(args.work).resolve(), Path(args.site).resolve()
    started = time.monotonic()
    try:
        notebooks = course_notebooks(args.only)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        executed: dict[str, nbformat.NotebookNode] = {}
        with tempfile.TemporaryDirectory(prefix="agentlab-docs-") as kernels:
            kernel = this_interpreter_kernel(Path(kernels))
            for number, path in enumerate(notebooks, 1):
                began = time.monotonic()
                nb, snapshots = execute(path, kernel)
                executed[f"notebooks/{path.name}"] = nb
                print(f"[{number:2}/{len(notebooks)}] {path.name}: ran in "
                      f"{time.monotonic() - began:.1f} s, {snapshots} live view(s) kept",
                      flush=True)
        from mkdocs.config import load_config

        config = load_config(str(ROOT / "mkdocs.yml"), docs_dir=str(work), site_dir=str(site))
        lay_out(work, executed, str(config["repo_url"]).rstrip("/"))
        print(f"MkDocs: {work} -> {site}", flush=True)
        mkdocs_build(config, work)
    except BuildError as error:
        print(f"\nmake docs failed: {error}", file=sys.stderr)
        return 1
    print(f"The course site is in {site} ({time.monotonic() - started:.0f} s); open "
          f"{site / 'index.html'}, or serve it: python -m http.server -d {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
