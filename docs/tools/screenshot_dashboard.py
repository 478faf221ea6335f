"""Take docs/images/dashboard.png: `agentlab dashboard` at work, as Chromium shows it.

    .venv/bin/python docs/tools/screenshot_dashboard.py [--out docs/images/dashboard.png]

Starts `agentlab dashboard` (an embedded server, the organisation in the page's kernel),
opens it in Debian's headless Chromium, gives the CEO a goal, the CTO a task and a poison
message through the page's own buttons, turns steady traffic on, waits a little, and saves
the top of the page. The README and notebooks/index.ipynb
show the picture.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "dashboard.png"))
    parser.add_argument("--wait", type=float, default=3.0,
                        help="seconds of traffic before the picture (default: %(default)s)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is not installed: apt-get install -y chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    app = subprocess.Popen([sys.executable, "-m", "agentlab", "dashboard", "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           cwd=ROOT)
    try:
        url = None
        assert app.stdout is not None
        for line in app.stdout:
            found = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        if url is None:
            print("agentlab dashboard did not start", file=sys.stderr)
            return 1
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1450},
                                    device_scale_factor=1)
            page.goto(url)
            for view in ("flowview", "consumersview", "streamsview", "topologyview"):
                page.wait_for_selector(f".agentlab-{view} .al-view", timeout=180_000)
            role = page.locator(".agentlab-dashboard select").first
            field = page.locator(".agentlab-task-title input")
            for to, title in (("ceo", "Launch the product"), ("cto", "Write the API spec")):
                role.select_option(to)
                field.fill(title)
                field.press("Enter")
                time.sleep(0.5)  # the new values reach the kernel before the click
                page.locator("button.agentlab-publish").click()
                time.sleep(1.5)
            page.locator("button.agentlab-poison").click()
            page.locator(".widget-toggle-button:has-text('steady traffic')").click()
            time.sleep(args.wait)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))  # the top of the page: controls, flow, consumers
            browser.close()
        print(f"wrote {out}")
        return 0
    finally:
        app.terminate()
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()


if __name__ == "__main__":
    sys.exit(main())
