"""Fixtures of the browser test: the built book on a local web server, and headless Chromium.

The book must already be built (`make book`), and Debian's Chromium installed
(`make chromium`); when either is missing the test fails and says what to run.
"""

import functools
import http.server
import os
import shutil
import threading

import pytest
import yaml

from ..conftest import ROOT

HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"


def toc_files():
    """The toc's documents in reading order (root first), as paths relative to the repository root without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                yield entry["file"]
            for key in ("parts", "chapters", "sections"):
                yield from walk(entry.get(key, []))

    return [toc["root"], *walk([toc])]


def chromium_executable():
    """$CHROMIUM, else Debian's chromium on the PATH; None when there is none."""
    candidates = [os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="session")
def built_html():
    if not (HTML / "index.html").exists():
        pytest.fail(f"{HTML.relative_to(ROOT)} has no built book: run `make book` before `make browser-test`")
    return HTML


@pytest.fixture(scope="session")
def book_url(built_html):
    """The base URL of the built book, served from 127.0.0.1 on a free port."""
    handler = functools.partial(_QuietHandler, directory=str(built_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    executable = chromium_executable()
    if executable is None:
        pytest.fail("no chromium found: run `make chromium` (Debian: apt-get install chromium), or set $CHROMIUM")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run `make venv` (it is pinned in requirements.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
