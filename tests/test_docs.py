"""The course site (`make docs`) built from a checkout, then read in Chromium without a kernel.

The build is docs/tools/build.py, the command `make docs` runs: every course notebook
executed on an embedded server, each live view's final snapshot kept in its output, MkDocs
Material into a site. The site is served from a local directory and every lesson page is
opened in Debian's Chromium with every request off this machine refused, so what is checked
is what a reader with no kernel and no network sees: at least one diagram (an SVG the views
drew) rendered on every lesson page, the dashboard's picture on the overview.

The convention this enforces with tests/test_notebooks.py: notebooks are committed without
outputs (test_committed_without_outputs there); the site, and the executed notebooks it
offers for download, carry them.

AGENTLAB_DOCS_SITE=site (a site `make docs` built) checks that site instead of building one.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "docs" / "tools" / "build.py"
LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")
                 if re.fullmatch(r"\d\d-[a-z0-9-]+", p.stem))
BUILD_LIMIT = 1200  # seconds: 15 notebooks (each promises under a minute) and MkDocs

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(BUILD_LIMIT + 300),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                       "(apt-get install -y chromium; .ci/run does it)"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    given = os.environ.get("AGENTLAB_DOCS_SITE")
    if given:
        path = Path(given).resolve()
        assert (path / "index.html").is_file(), f"AGENTLAB_DOCS_SITE={given}: no index.html"
        return path
    out = tmp_path_factory.mktemp("docs")
    done = subprocess.run(
        [sys.executable, str(BUILD), "--site", str(out / "site"), "--work", str(out / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_LIMIT, check=False)
    print(done.stdout)
    assert done.returncode == 0, f"make docs failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    for lesson in LESSONS:  # one progress line per notebook
        assert re.search(rf"^\[\s*\d+/\d+\] {lesson}\.ipynb: ran in ", done.stdout, re.M), \
            done.stdout
    return out / "site"


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        yield chromium
        chromium.close()


def _offline_page(browser, served: str):
    """A page that may load from the local site only: anything else is refused, and noted."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.refused = []

    def route(r):
        if r.request.url.startswith(served):
            r.continue_()
        else:
            page.refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return page


# What the views drew, rendered: each view's snapshot in an output, [drawn, not drawn]. Drawn:
# on screen with a size, holding an SVG with shapes (a flow, a topology, a waterfall) or a
# table with rows (streams, consumers, a subscription matrix).
_DIAGRAMS = """() => {
    const drawn = view => {
        const box = view.getBoundingClientRect();
        if (box.width < 20 || box.height < 20) return false;
        const svg = [...view.querySelectorAll('svg')].some(s =>
            s.getBoundingClientRect().width > 20 && s.querySelector('line,path,rect,text'));
        return svg || view.querySelectorAll('table tr td').length > 0;
    };
    const views = [...document.querySelectorAll('.jp-OutputArea-output .al-view')];
    return [views.filter(drawn).length, views.filter(v => !drawn(v)).length];
}"""


def test_every_lesson_page_shows_a_diagram_without_a_kernel(served, browser, tmp_path):
    page = _offline_page(browser, served)
    without, counts = [], {}
    try:
        for lesson in LESSONS:
            reply = page.goto(f"{served}/notebooks/{lesson}/", wait_until="load")
            if reply is None or not reply.ok:
                without.append(f"{lesson} (no page)")
                continue
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
            drawn, blank = counts[lesson] = page.evaluate(_DIAGRAMS)
            if not drawn or blank:
                without.append(lesson if not drawn else f"{lesson} ({blank} blank)")
                page.screenshot(path=str(tmp_path / f"{lesson}.png"), full_page=True)
            # No widget reference is left for a widget manager the page does not have.
            assert not page.query_selector_all(
                "script[type='application/vnd.jupyter.widget-view+json']"), lesson
    finally:
        page.close()
    assert not without, (f"no rendered diagram on {without} (screenshots in {tmp_path}); "
                         f"[drawn, blank] views per lesson: {counts}")


def test_the_flow_keeps_its_final_state_and_its_mermaid(served, browser):
    """Lesson 04's flow shows the meeting's messages (what it showed at the end of the run,
    not the empty view it was when displayed), and its Mermaid source under it."""
    page = _offline_page(browser, served)
    try:
        page.goto(f"{served}/notebooks/04-meetings/", wait_until="load")
        flow = page.locator(".jp-OutputArea-output:has(.al-view h3:text-is('Message flow'))")
        assert flow.count() >= 1
        text = flow.first.inner_text()
        assert "MEETINGS" in text, text[:2000]
        mermaid = flow.first.locator("details.al-mermaid pre").text_content() or ""
        assert mermaid.startswith("sequenceDiagram") and "MEETINGS" in mermaid
    finally:
        page.close()


def test_the_overview_shows_the_dashboard_at_work(served, browser):
    page = _offline_page(browser, served)
    try:
        page.goto(f"{served}/notebooks/", wait_until="load")
        picture = page.locator("img[src*='dashboard.png']")
        assert picture.count() == 1, "the overview has no picture of the dashboard"
        picture.scroll_into_view_if_needed()
        assert page.evaluate("img => img.complete && img.naturalWidth > 400",
                             picture.element_handle())
        # The home page is the README, and its course table leads to the lessons' pages.
        page.goto(f"{served}/", wait_until="load")
        link = page.locator("a[href*='notebooks/00-start-here/']").first
        link.click()
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
        assert page.url.rstrip("/").endswith("/notebooks/00-start-here")
    finally:
        page.close()


def test_the_site_carries_the_outputs_the_repository_does_not(site):
    for lesson in LESSONS:
        executed = nbformat.read(site / "notebooks" / lesson / f"{lesson}.ipynb", as_version=4)
        committed = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
        ran = [c for c in executed.cells if c.cell_type == "code" and c.outputs]
        assert ran, f"{lesson}: the site's notebook has no outputs"
        assert not any(c.outputs for c in committed.cells if c.cell_type == "code")
        errors = [o for c in ran for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{lesson}: {errors}"
        text = json.dumps(executed)
        assert "application/vnd.jupyter.widget-view+json" not in text, lesson
        assert "widgets" not in executed.metadata, lesson
