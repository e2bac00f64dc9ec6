"""Every page of the built book, as a reader's browser shows it.

Each page in `_toc.yml` is opened in headless Chromium from a local server and
must: answer 200 with no console error, page error or failed local request;
have its math typeset by MathJax (no raw TeX left in the visible text, no TeX
error) with no display equation wider than the text column (at a 1280 px wide
window); show every image; have every internal link point to an existing file
and anchor; and, for a chapter made from a notebook, offer a Colab launch link
to that notebook on the course's repository. A full-page screenshot of each page
goes to `_build/screenshots/<name>.png`.

Nothing is fetched from the network: requests to other hosts are blocked,
except MathJax's CDN, which is answered from the MathJax 3 files that the
pinned `sphinx-mathjax-offline` package ships.
"""

import functools
import html.parser
import importlib.metadata
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from ..conftest import ROOT
from .conftest import HTML, toc_files

PAGES = toc_files()
MATHJAX_CDN = re.compile(r"^https://cdn\.jsdelivr\.net/npm/mathjax@3[^/]*/es5/(?P<file>[^?#]+)")
MATHJAX_FILES = Path(
    importlib.metadata.distribution("sphinx-mathjax-offline").locate_file("sphinx-mathjax-offline/static/mathjax")
)
# TeX that MathJax should have replaced: display and inline delimiters, environments, and
# dollar-delimited spans with TeX in them ($O(n^2)$, $x_i$; not "$5 and 10$")
RAW_TEX = re.compile(r"\$\$|\\begin\{|\\end\{|\\\(|\\\)|\\\[|\\\]|\$[^$\s][^$]*?[\\^_{}][^$]*?\$|\$\\[a-zA-Z]")
PAGE_TIMEOUT_MS = 30_000

WAIT_FOR_MATHJAX = """async () => {
    if (!window.MathJax) return "absent";
    if (!window.MathJax.startup || !window.MathJax.startup.promise) return "not started";
    await window.MathJax.startup.promise;
    return "typeset";
}"""

WAIT_FOR_IMAGES = """async () => {
    const images = Array.from(document.images);
    images.forEach(image => { image.loading = "eager"; });
    await Promise.all(images.map(image => image.complete ? null : new Promise(done => {
        image.addEventListener("load", done);
        image.addEventListener("error", done);
    })));
    return images.map(image => ({src: image.currentSrc || image.src, width: image.naturalWidth}));
}"""

# visible text outside code, scripts and typeset math, by text node
VISIBLE_PROSE = """() => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const texts = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const parent = node.parentElement;
        if (!parent || parent.closest("pre, code, script, style, textarea, mjx-container")) continue;
        if (!parent.checkVisibility()) continue;
        texts.push(node.data);
    }
    return texts;
}"""

MATH_STATE = """() => ({
    math: document.querySelectorAll(".math").length,
    untypeset: Array.from(document.querySelectorAll(".math"))
        .filter(el => !el.querySelector("mjx-container") && !el.closest("mjx-container"))
        .map(el => el.textContent.trim().slice(0, 80)),
    errors: Array.from(document.querySelectorAll("mjx-merror"), el => el.textContent.slice(0, 80)),
})"""

# displayed equations that do not fit the text column, so that the reader must scroll them
# sideways: their box (the mjx-container, which scrolls) or its wrapper is scrolled, or the
# typeset math is wider than the article's text column
WIDE_DISPLAY_MATH = r"""() => {
    const article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    const style = getComputedStyle(article);
    const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const scrolls = element => element.scrollWidth > element.clientWidth + 2;
    return Array.from(document.querySelectorAll('mjx-container[display="true"]'))
        .filter(container => container.checkVisibility())
        .map(container => {
            const wrapper = container.closest("div.math") || container.parentElement;
            const eqno = wrapper.querySelector(".eqno");
            const number = eqno
                ? (eqno.textContent.match(/\([^)]*\)/) || [eqno.textContent.trim()])[0]
                : "(unnumbered)";
            const math = container.querySelector("mjx-math") || container;
            return {
                number: number,
                id: wrapper.id || "",
                width: Math.ceil(math.getBoundingClientRect().width),
                box: container.clientWidth,
                column: Math.floor(column),
                scrolls: scrolls(container) || scrolls(wrapper),
            };
        })
        .filter(equation => equation.scrolls || equation.width > equation.column);
}"""


def page_name(file):
    return Path(file).name


def is_notebook(file):
    return (ROOT / f"{file}.ipynb").exists()


def expected_colab_url(file, repository=None):
    """The Colab launch link of a notebook page, from `_config.yml`'s `repository` section."""
    repository = repository or yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner, repo = urlsplit(repository["url"]).path.strip("/").removesuffix(".git").split("/")[:2]
    notebook = "/".join(part for part in (repository.get("path_to_book", "").strip("/"), f"{file}.ipynb") if part)
    return f"https://colab.research.google.com/github/{owner}/{repo}/blob/{repository['branch']}/{notebook}"


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)


@functools.cache
def anchors_of(path):
    """The ids (and <a name>s) that a built HTML file defines."""
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.ids


def broken_internal_links(hrefs, base_url, html_root=HTML):
    """Links into the book served from html_root at base_url whose file or anchor does not exist."""
    server = urlsplit(base_url).netloc
    html_root = html_root.resolve()
    broken = []
    for href in sorted(set(hrefs)):
        url = urlsplit(href)
        if url.scheme not in ("http", "https") or url.netloc != server:
            continue
        target = (html_root / unquote(url.path).lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(html_root) or not target.is_file():
            broken.append(f"{href}: no file {target}")
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in anchors_of(target):
            broken.append(f"{href}: no element with id {unquote(url.fragment)!r} in {target.relative_to(html_root)}")
    return broken


def serve_offline(route, blocked):
    """Answer MathJax's CDN from the local MathJax files; block every other request to another host."""
    match = MATHJAX_CDN.match(route.request.url)
    local = MATHJAX_FILES / match["file"] if match else None
    if local is not None and local.is_file():
        route.fulfill(path=local)
    else:
        blocked.append(route.request.url)
        route.abort("blockedbyclient")


def test_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "page.html").write_text('<h1 id="title">T</h1><a name="old-anchor"></a>')
    base = "http://127.0.0.1:8000/"
    hrefs = [
        f"{base}book/page.html",
        f"{base}book/page.html#title",
        f"{base}book/page.html#old-anchor",
        f"{base}book/page.html#",
        f"{base}book/page.html#missing",
        f"{base}book/other.html",
        f"{base}../outside.html",
        "https://example.org/book/other.html",
        "mailto:someone@example.org",
    ]
    broken = broken_internal_links(hrefs, base, html_root=tmp_path)
    assert [entry.split(": ", 1)[0] for entry in broken] == [
        f"{base}../outside.html",
        f"{base}book/other.html",
        f"{base}book/page.html#missing",
    ]


def test_raw_tex_is_found_in_text():
    text = r"a $$x$$ b \begin{align} c $\sqrt{d}$ e \(y\) f needs $O(n^2)$ memory, g $\alpha"
    assert [m[0] for m in RAW_TEX.finditer(text)] == [
        "$$",
        "$$",
        "\\begin{",
        "$\\sqrt{d}$",
        "\\(",
        "\\)",
        "$O(n^2)$",
        "$\\a",
    ]
    assert not RAW_TEX.search("costs $5 and 10$ at 2x speed")


def test_wide_display_math_is_found(browser):
    equation = (
        '<div class="math" id="equation-{label}"><span class="eqno">({number})'
        '<a class="headerlink" href="#equation-{label}">#</a></span>'
        '<mjx-container display="true"><mjx-math style="width: {width}px">x</mjx-math></mjx-container></div>'
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.set_content(
            "<style>div.math { display: flex; flex-direction: row-reverse; overflow: hidden }"
            " mjx-container { display: block; flex-grow: 1; overflow: auto }"
            " mjx-math { display: inline-block }</style>"
            '<article class="bd-article" style="width: 640px; padding: 0 20px">'
            + equation.format(label="eq-fits", number=1, width=500)
            + equation.format(label="eq-wide", number=2, width=900)
            + "</article>"
        )
        wide = page.evaluate(WIDE_DISPLAY_MATH)
    finally:
        page.close()
    assert [(found["number"], found["id"], found["width"]) for found in wide] == [("(2)", "equation-eq-wide", 900)]


def test_colab_url_follows_the_repository_config():
    repository = {"url": "https://github.com/someone/course.git", "branch": "dev", "path_to_book": ""}
    assert expected_colab_url("book/intro", repository) == (
        "https://colab.research.google.com/github/someone/course/blob/dev/book/intro.ipynb"
    )
    repository["path_to_book"] = "docs/"
    assert expected_colab_url("book/intro", repository) == (
        "https://colab.research.google.com/github/someone/course/blob/dev/docs/book/intro.ipynb"
    )


@pytest.mark.parametrize("file", PAGES, ids=page_name)
def test_book_page_renders_completely(file, book_url, browser, screenshots):
    url = f"{book_url}{file}.html"
    if not (HTML / f"{file}.html").is_file():
        pytest.fail(f"{file} is in _toc.yml but not in {HTML.relative_to(ROOT)}: run `make book`")
    problems, blocked = [], []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.route(lambda request_url: not request_url.startswith(book_url), lambda route: serve_offline(route, blocked))
    page = context.new_page()

    def on_console(message):
        # a request we blocked on purpose logs net::ERR_BLOCKED_BY_CLIENT: not the book's fault
        if message.type == "error" and "ERR_BLOCKED_BY_CLIENT" not in message.text:
            problems.append(f"console error: {message.text} ({message.location.get('url')})")

    def on_response(response):
        if response.url.startswith(book_url) and response.status >= 400:
            problems.append(f"HTTP {response.status} for {response.url}")

    def on_request_failed(request):
        if request.url.startswith(book_url):
            problems.append(f"request failed: {request.url} ({request.failure})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    try:
        response = page.goto(url, wait_until="load")
        if response is None or response.status != 200:
            problems.append(f"{url} answered {response and response.status}, not 200")

        mathjax = page.evaluate(WAIT_FOR_MATHJAX)
        images = page.evaluate(WAIT_FOR_IMAGES)
        page.wait_for_load_state("networkidle")  # MathJax's fonts
        page.screenshot(path=screenshots / f"{page_name(file)}.png", full_page=True)

        math = page.evaluate(MATH_STATE)
        if math["math"] and mathjax != "typeset":
            problems.append(f"{math['math']} math elements but MathJax is {mathjax}")
        problems += [f"math not typeset: {text!r}" for text in math["untypeset"]]
        problems += [f"TeX error in math: {text!r}" for text in math["errors"]]
        problems += [
            f"display equation {wide['number']} ({wide['id'] or 'no id'}) is {wide['width']} px wide, more than"
            f" its {wide['box']} px box or the {wide['column']} px text column: it scrolls sideways; break it over"
            " lines (aligned) or move a definition into the text"
            for wide in page.evaluate(WIDE_DISPLAY_MATH)
        ]
        for text in page.evaluate(VISIBLE_PROSE):
            for raw in RAW_TEX.finditer(text):
                context_text = text[max(0, raw.start() - 40) : raw.end() + 40].strip()
                problems.append(f"raw TeX {raw[0]!r} in visible text: {context_text!r}")

        for image in images:
            local = image["src"].startswith(book_url) or image["src"].startswith("data:")
            if local and image["width"] == 0:
                problems.append(f"image did not load: {image['src']}")

        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(link => link.href)")
        problems += [f"broken link: {broken}" for broken in broken_internal_links(hrefs, book_url)]

        if is_notebook(file):
            colab = page.eval_on_selector_all(
                ".dropdown-launch-buttons a[href*='colab.research.google.com']", "links => links.map(link => link.href)"
            )
            if colab != [expected_colab_url(file)]:
                problems.append(f"Colab launch link is {colab}, expected [{expected_colab_url(file)!r}]")
    finally:
        context.close()
    if problems:
        pytest.fail(f"{file}.html:\n" + "\n".join(problems), pytrace=False)
