#!/usr/bin/env python3
"""Open a report.html in headless Chromium, check that it rendered, and save a screenshot.

    python scripts/screenshot_report.py runs/quick-chain/report/report.html docs/report-screenshot.png

Drives Debian's ``chromium`` through its ``chromedriver`` with selenium (``pip install selenium``; no
browser download: ``scripts/install-browser.sh`` installs both from the system's packages). Checks, as
``tests/test_report_browser.py`` does: every <img> decoded (naturalWidth > 0), every <table> has body
rows, and the browser logged no console error. Exit status 1 when a check fails (the screenshot is
still written), 2 when no browser is installed.

Options: ``--width``/``--height`` (the window, default 1400 x 1100: the first screen), ``--full-page``
(the whole page, as tall as it is).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def find(names) -> str | None:
    """The first of ``names`` on PATH (or under /usr/lib/chromium, where Debian keeps the real binary)."""
    for name in names:
        hit = shutil.which(name) or shutil.which(name, path="/usr/lib/chromium")
        if hit:
            return hit
    return None


def missing() -> str | None:
    """Why no headless browser can be driven here (None when one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if find(CHROMIUM) is None or find(DRIVER) is None:
        return "no Chromium and chromedriver on PATH (run scripts/install-browser.sh)"
    return None


def open_browser(width: int = 1400, height: int = 1100):
    """A headless Chromium (selenium WebDriver) that records the browser console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find(CHROMIUM)
    # no sandbox: CI and containers run as root; no GPU, no /dev/shm: containers have neither to spare
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(find(DRIVER)), options=options)


PAGE_STATE = """
const imgs = [...document.images];
return {
  ready: document.readyState,
  images: imgs.map(i => ({file: i.dataset.file || i.alt, complete: i.complete, width: i.naturalWidth,
                          height: i.naturalHeight})),
  tables: [...document.querySelectorAll('table')].map(t => ({id: t.id,
      rows: t.querySelectorAll('tbody tr').length, cells: t.querySelectorAll('tbody td').length})),
  external: [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
  scripts: document.scripts.length,
  height: document.documentElement.scrollHeight,
};
"""


def inspect(driver, path: Path) -> dict:
    """Load ``path`` and return what rendered: images, tables, external references, console errors."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    state = driver.execute_script(PAGE_STATE)
    state["console_errors"] = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return state


def problems(state: dict) -> list[str]:
    """Everything wrong with an inspected page (empty when it rendered whole)."""
    out = [f"image {i['file']} did not load" for i in state["images"] if not i["complete"] or i["width"] == 0]
    out += [f"table {t['id']} has no rows" for t in state["tables"] if t["rows"] == 0 or t["cells"] == 0]
    out += [f"external reference {u}" for u in state["external"]]
    out += [f"console error: {m}" for m in state["console_errors"]]
    if not state["images"] and not state["tables"]:
        out.append("the page has neither images nor tables")
    return out


def screenshot(driver, out: Path, full_page: bool, width: int) -> Path:
    """Save a PNG of the first screen, or of the whole page with ``full_page``."""
    if full_page:
        driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight") + 100)
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="report.html")
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1100)
    ap.add_argument("--full-page", action="store_true")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report}: no such file", file=sys.stderr)
        return 2
    why = missing()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    driver = open_browser(args.width, args.height)
    try:
        state = inspect(driver, args.report)
        screenshot(driver, args.out, args.full_page, args.width)
    finally:
        driver.quit()
    bad = problems(state)
    print(f"{args.out}: {len(state['images'])} images, {len(state['tables'])} tables, "
          f"page {state['height']} px tall" + ("" if not bad else "; problems:\n  " + "\n  ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
