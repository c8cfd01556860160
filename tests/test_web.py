"""The web page: static files served with the right types, and a real browser asking a question,
following a citation into its source and checking the highlighted span, and opening deep links
(`/?doc=SOURCE&start=N&end=M`) to a span of a document."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect, sync_playwright

from service.api import create_app
from service.api.web import STATIC_DIR
from service.config import Settings
from service.embedding import Embedder
from service.indexing import Builder
from service.keys import add_key
from tests.conftest import serve
from tests.test_generation_api import Upstream, fake_llm
from tests.test_generation_api import serve as serve_llm
from tests.test_openai import SEED, TROOPS, seed_index

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WEB_KEY = "web-secret"
# A source whose name needs encoding in a URL (a folder, a space, "+", non-ASCII) and whose text
# has characters outside the BMP before the linked span (offsets count code points).
TRICKY_SOURCE = "notes/field day + ünïcode.md"
TRICKY_TEXT = (
    "# Field notes \U0001f600\n\n"
    "Camp was set up by noon \U0001f3d5 near the café, and the naïve plan held.\n\n"
    "The river crossing took three days \U0001f6a3 because the bridge was out.\n"
    "Nobody minded.\n"
)
TRICKY_SPAN = "The river crossing took three days \U0001f6a3 because the bridge was out.\nNobody"
# Failed fetches the page expects and reports itself (missing key, unknown document).
EXPECTED_LOAD_ERROR = re.compile(r"Failed to load resource: .*status of 40[14]\b")

ClientFor = Callable[[Settings], TestClient]


# ----------------------------------------------------------------------------- static files


@pytest.fixture
def client(settings: Settings, client_for: ClientFor) -> TestClient:
    """An app with no index: the page is served regardless."""
    return client_for(settings)


def test_page_is_html_with_its_assets(client: TestClient) -> None:
    """GET / is the page; it links its stylesheet and script relative to itself."""
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert '<link rel="stylesheet" href="static/app.css">' in r.text
    assert '<script src="static/app.js" defer></script>' in r.text
    assert '<label for="question">Question</label>' in r.text
    assert 'aria-live="polite"' in r.text
    assert client.head("/").status_code == 200


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("app.css", "text/css; charset=utf-8"), ("app.js", "text/javascript; charset=utf-8")],
)
def test_assets_have_their_content_types(client: TestClient, name: str, content_type: str) -> None:
    """The stylesheet and the script, byte for byte from the package."""
    r = client.get(f"/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.content == (STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize("name", ["index.html.bak", "missing.js", "..%2Fweb.py", "%2e%2e"])
def test_only_known_assets_are_served(client: TestClient, name: str) -> None:
    """Nothing else in or around the folder is reachable."""
    r = client.get(f"/static/{name}")
    assert r.status_code == 404


def test_page_loads_nothing_from_elsewhere() -> None:
    """Works offline: no CDN, no external font, no absolute URL in any shipped file."""
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path.name
        assert "@import" not in text and "url(" not in text, path.name


def test_script_never_inserts_html() -> None:
    """Server text goes into the page as text nodes only."""
    script = (STATIC_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


# ----------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    """The system Chromium; skipped only outside CI when it is not installed."""
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium); set CI to require")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Browser]:
    """Headless system Chromium driven by Playwright (no downloaded browser)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web_embedder(real_embedder: Embedder) -> Embedder:
    """The bundled model."""
    return real_embedder


@pytest.fixture(scope="module")
def web_settings(tmp_path_factory: pytest.TempPathFactory, web_embedder: Embedder) -> Settings:
    """The real seed indexed with the real model."""
    return seed_index(tmp_path_factory.mktemp("web-live"), web_embedder)


@pytest.fixture(scope="module")
def web_url(web_settings: Settings, web_embedder: Embedder) -> Iterator[str]:
    """A real server over the real seed, without keys."""
    with serve(create_app(web_settings, embedder=web_embedder)) as url:
        yield url


@pytest.fixture(scope="module")
def tricky_url(tmp_path_factory: pytest.TempPathFactory, web_embedder: Embedder) -> Iterator[str]:
    """A real server over the seed and TRICKY_SOURCE."""
    folder = tmp_path_factory.mktemp("web-links")
    seeds = folder / "seeds"
    (seeds / "notes").mkdir(parents=True)
    shutil.copy(SEED, seeds / SEED.name)
    (seeds / TRICKY_SOURCE).write_text(TRICKY_TEXT, encoding="utf-8")
    settings = Settings(_env_file=None, seeds_dir=seeds, index_dir=folder / "index")
    Builder(settings, web_embedder).build()
    with serve(create_app(settings, embedder=web_embedder)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(web_settings: Settings, web_embedder: Embedder) -> Iterator[str]:
    """A second server over the same index, requiring an API key."""
    settings = web_settings.model_copy(update={"api_keys": [WEB_KEY]})
    with serve(create_app(settings, embedder=web_embedder)) as url:
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab; fails the test on any script error or console error (e.g. CSP)."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not EXPECTED_LOAD_ERROR.search(message.text):
            problems.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    yield tab
    context.close()
    assert problems == []


def ask_in_page(page: Page, question: str) -> None:
    """Type the question and submit it with the keyboard."""
    page.get_by_label("Question", exact=True).fill(question)
    page.get_by_label("Question", exact=True).press("Enter")


@pytest.mark.e2e
def test_ask_and_open_the_first_citation(page: Page, web_url: str, tmp_path: Path) -> None:
    """Ask about the seed, follow [1] to its passage, open the citation, check the marked span."""
    expected = httpx.post(f"{web_url}/v1/ask", json={"question": TROOPS}, timeout=60).json()
    first = expected["passages"][0]

    page.goto(f"{web_url}/")
    expect(page.locator("#build-id")).to_have_text(expected["index"]["build_id"])
    page.get_by_label("Question", exact=True).fill(TROOPS)
    page.get_by_role("button", name="Ask", exact=True).click()

    answer = page.locator("#answer .answer-text")
    expect(answer).to_have_text(expected["answer"]["text"], timeout=30_000)
    expect(answer).to_contain_text("12,000")
    expect(page.locator("#status")).to_contain_text("Answer ready")
    passages = page.locator("#passages > li")
    expect(passages).to_have_count(len(expected["passages"]))

    # The [1] marker links to passage 1, which shows its highlighted sentence, source and lines.
    page.locator("#answer a.cite", has_text="[1]").first.click()
    passage = page.locator("#passage-1")
    expect(passage).to_be_focused()
    expect(passage.locator(".passage-text")).to_have_text(first["text"])
    expect(passage.locator(".passage-text mark")).to_have_text(
        [h["text"] for h in first["highlights"]]
    )
    citation = first["citation"]
    expect(passage.locator("button.citation")).to_have_text(
        f"{citation['source']} · lines {citation['line_start']}–{citation['line_end']}"
    )

    # Opening the citation shows the source with exactly the cited span marked, in view.
    passage.locator("button.citation").click()
    doc_view = page.locator("#doc-view")
    expect(doc_view).to_be_visible()
    expect(doc_view).to_be_focused()
    expect(page.locator("#doc-title")).to_have_text(citation["source"])
    mark = doc_view.locator("mark#cited-span")
    expect(mark).to_have_count(1)
    assert mark.text_content() == first["text"]
    assert mark.text_content() == passage.locator(".passage-text").text_content()
    document = httpx.get(f"{web_url}{citation['url'].split('#')[0]}", timeout=30).json()
    assert doc_view.locator("#doc-text").text_content() == document["text"]
    expect(mark).to_be_in_viewport()

    page.screenshot(path=str(tmp_path / "web.png"), full_page=True)  # renders the whole page

    # Escape closes the document view and gives focus back to the citation button.
    page.keyboard.press("Escape")
    expect(doc_view).to_be_hidden()
    expect(passage.locator("button.citation")).to_be_focused()


@pytest.mark.e2e
def test_a_new_question_starts_from_a_clean_page(page: Page, web_url: str) -> None:
    """The source panel, the old answer and old errors go when a question is asked."""
    page.goto(f"{web_url}/")
    ask_in_page(page, TROOPS)
    expect(page.locator("#status")).to_contain_text("Answer ready", timeout=30_000)
    page.locator("#passage-1 button.citation").click()
    doc_view = page.locator("#doc-view")
    expect(doc_view.locator("mark#cited-span")).to_have_count(1)
    assert "doc=" in page.url

    # A validation error leaves no old answer under it.
    ask_in_page(page, "   ")
    expect(page.locator("#status")).to_have_text("Type a question first.")
    expect(page.locator("#results")).to_be_hidden()
    expect(doc_view).to_be_hidden()
    assert "doc=" not in page.url

    # The next answer comes without the error and without the last answer's source open.
    ask_in_page(page, "What is the boiling point of liquid nitrogen in kelvin?")
    expect(page.locator("#status")).to_contain_text("No grounded answer", timeout=30_000)
    expect(page.locator("#status")).not_to_have_class(re.compile(r"status-error"))
    expect(page.locator("#results")).to_be_visible()
    expect(doc_view).to_be_hidden()


@pytest.mark.e2e
def test_an_over_long_question_is_refused_with_a_message(page: Page, web_url: str) -> None:
    """Not cut by the input: refused before it is sent, saying why (the API's limit)."""
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/v1/ask") else None)
    page.goto(f"{web_url}/")
    question = "Why? " * 400 + "Why?"  # 2004 characters
    ask_in_page(page, question)
    status = page.locator("#status")
    expect(status).to_have_text(
        "This question is 2004 characters long; questions may have at most 2000. "
        "Shorten it and ask again."
    )
    expect(status).to_have_class(re.compile(r"status-error"))
    assert page.get_by_label("Question", exact=True).input_value() == question  # kept whole
    expect(page.locator("#results")).to_be_hidden()
    assert asked == []


@pytest.mark.e2e
def test_the_placeholder_names_an_indexed_document(page: Page, tricky_url: str) -> None:
    """A title of what is indexed, preferring one taken from the text over a file name."""
    listed = httpx.get(f"{tricky_url}/v1/documents", timeout=30).json()["documents"]
    assert {d["source"]: d["title"] for d in listed} == {
        SEED.name: SEED.name,  # its first line is a paragraph: the file name
        TRICKY_SOURCE: "Field notes \U0001f600",
    }
    page.goto(f"{tricky_url}/")
    expect(page.get_by_label("Question", exact=True)).to_have_attribute(
        "placeholder", "e.g. Ask about Field notes \U0001f600"
    )


@pytest.mark.e2e
def test_a_placeholder_over_documents_titled_by_file_name_names_the_file(
    page: Page, web_url: str
) -> None:
    page.goto(f"{web_url}/")
    expect(page.get_by_label("Question", exact=True)).to_have_attribute(
        "placeholder", f"Ask a question about {SEED.name}"
    )


@pytest.mark.e2e
def test_abstaining_answer_and_keyboard_only(page: Page, web_url: str) -> None:
    """An unanswerable question says so; the whole flow works from the keyboard."""
    page.goto(f"{web_url}/")
    ask_in_page(page, "What is the boiling point of liquid nitrogen in kelvin?")
    expect(page.locator("#status")).to_contain_text("No grounded answer", timeout=30_000)
    expect(page.locator("#answer")).to_contain_text("do not answer")
    # Tab from the question to the first citation button, open it with Enter.
    first_citation = page.locator("#passage-1 button.citation")
    for _ in range(20):
        page.keyboard.press("Tab")
        if first_citation.evaluate("b => b === document.activeElement"):
            break
    expect(first_citation).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#doc-view")).to_be_focused()
    expect(page.locator("#doc-view mark#cited-span")).to_have_count(1)


@pytest.mark.e2e
def test_api_key_is_asked_for_kept_and_sent(page: Page, keyed_url: str) -> None:
    """Without a key the page asks for one; with it, asks succeed and it survives a reload."""
    page.goto(f"{keyed_url}/")
    ask_in_page(page, TROOPS)
    expect(page.locator("#status")).to_contain_text("needs an API key", timeout=30_000)
    key_input = page.get_by_label("API key (optional, kept for this tab only)")
    expect(key_input).to_be_focused()
    key_input.fill(WEB_KEY)
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator("#answer .answer-text")).to_contain_text("12,000", timeout=30_000)
    page.reload()
    expect(page.get_by_label("API key (optional, kept for this tab only)")).to_have_value(WEB_KEY)
    stored = page.evaluate("() => sessionStorage.getItem('groundqa.apiKey')")
    assert stored == WEB_KEY


# ----------------------------------------------------------------------------- deep links


def span_link(base_url: str, source: str, start: object, end: object, **extra: str) -> str:
    """A deep link as chat answers build it (urlencode: "/" as %2F, spaces as "+")."""
    return f"{base_url}/?" + urlencode({"doc": source, "start": start, "end": end, **extra})


def fetch_document(base_url: str, source: str, **kwargs: Any) -> dict[str, Any]:
    """The indexed document through the API, as the page fetches it."""
    r = httpx.get(f"{base_url}/v1/documents/{quote(source, safe='/')}", timeout=30, **kwargs)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def lines_of(text: str, start: int, end: int) -> str:
    """Lines of text[start:end], numbered as the index numbers a chunk's lines."""
    first, last = text.count("\n", 0, start) + 1, text.count("\n", 0, end - 1) + 1
    return f"line {first}" if first == last else f"lines {first}–{last}"


@pytest.mark.e2e
def test_deep_link_opens_the_cited_span(page: Page, web_url: str, tmp_path: Path) -> None:
    """/?doc=&start=&end= for a known chunk shows its document with exactly text[start:end]
    marked, in view and focused, says so in the status line, and fills in ?q= without asking."""
    passages = httpx.post(f"{web_url}/v1/ask", json={"question": TROOPS}, timeout=60).json()
    # The passage furthest into the document, so the mark has to be scrolled to.
    citation = max((p["citation"] for p in passages["passages"]), key=lambda c: c["char_start"])
    source, start, end = citation["source"], citation["char_start"], citation["char_end"]
    document = fetch_document(web_url, source)

    page.goto(span_link(web_url, source, start, end, q=TROOPS))
    doc_view = page.locator("#doc-view")
    expect(doc_view).to_be_visible()
    expect(doc_view).to_be_focused()
    expect(page.locator("#doc-title")).to_have_text(source)
    where = f"lines {citation['line_start']}–{citation['line_end']} (characters {start}–{end})"
    assert where == f"{lines_of(document['text'], start, end)} (characters {start}–{end})"
    expect(page.locator("#status")).to_have_text(f"Showing {source}, {where}.")
    expect(page.locator("#doc-meta")).to_contain_text(f"The link cites {where}")
    mark = doc_view.locator("mark#cited-span.cited")
    expect(mark).to_have_count(1)
    assert mark.text_content() == document["text"][start:end]
    assert doc_view.locator("#doc-text").text_content() == document["text"]
    expect(mark).to_be_in_viewport()
    # ?q= fills the question box; with a deep link it does not ask.
    expect(page.get_by_label("Question", exact=True)).to_have_value(TROOPS)
    expect(page.locator("#results")).to_be_hidden()

    page.screenshot(path=str(tmp_path / "deep-link.png"), full_page=True)

    # Closing the view drops the span from the URL and gives focus to the question.
    page.keyboard.press("Escape")
    expect(doc_view).to_be_hidden()
    expect(page).to_have_url(f"{web_url}/?" + urlencode({"q": TROOPS}))
    expect(page.get_by_label("Question", exact=True)).to_be_focused()


@pytest.mark.e2e
def test_deep_link_counts_code_points_and_decodes_the_source(page: Page, tricky_url: str) -> None:
    """Offsets are code points (Python str indices) even after astral characters, and a source
    with a folder, a space, "+" and non-ASCII letters round-trips through the URL."""
    text = fetch_document(tricky_url, TRICKY_SOURCE)["text"]
    start = text.index(TRICKY_SPAN)
    end = start + len(TRICKY_SPAN)
    assert len(text[:start].encode("utf-16-le")) // 2 > start  # astral characters come before

    page.goto(span_link(tricky_url, TRICKY_SOURCE, start, end))
    expect(page.locator("#doc-title")).to_have_text(TRICKY_SOURCE)
    where = f"{lines_of(text, start, end)} (characters {start}–{end})"
    expect(page.locator("#status")).to_have_text(f"Showing {TRICKY_SOURCE}, {where}.")
    mark = page.locator("#doc-view mark#cited-span")
    expect(mark).to_have_count(1)
    assert mark.text_content() == text[start:end] == TRICKY_SPAN
    assert page.locator("#doc-text").text_content() == text


@pytest.mark.e2e
@pytest.mark.parametrize(
    "source",
    [
        "nope/missing.txt",
        "<img src=x onerror=alert(1)>.txt",
        "../v1/index",  # must not resolve to another API path
        "sub/./000_6103265ed68543fd.txt",
    ],
)
def test_deep_link_to_an_unknown_document(page: Page, web_url: str, source: str) -> None:
    """A source not in the index is an error in the status line, as text; nothing else opens."""
    page.goto(span_link(web_url, source, 0, 10))
    status = page.locator("#status")
    expect(status).to_have_text(f"{source} is not in the index.")
    expect(status).to_have_class(re.compile(r"\bstatus-error\b"))
    expect(page.locator("#doc-view")).to_be_hidden()
    expect(page.locator("img")).to_have_count(0)


@pytest.mark.e2e
def test_deep_link_without_a_document_name(page: Page, web_url: str) -> None:
    """?doc= with nothing in it says so."""
    page.goto(f"{web_url}/?doc=&start=0&end=5")
    expect(page.locator("#status")).to_have_text("The link names no document to show.")
    expect(page.locator("#doc-view")).to_be_hidden()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("", "the link names no span"),
        ("&start=5", "the link gives no end"),
        ("&start=abc&end=5", "start “abc” is not a character offset (a whole number)"),
        ("&start=-1&end=5", "start “-1” is not a character offset (a whole number)"),
        ("&start=3&end=2.5", "end “2.5” is not a character offset (a whole number)"),
        ("&start=10&end=5", "the span characters 10–5 is empty or reversed"),
        ("&start=7&end=7", "the span characters 7–7 is empty or reversed"),
        ("&start=0&end=99999999", "the span characters 0–99999999 ends past the document's {n}"),
    ],
)
def test_deep_link_with_a_bad_span_opens_the_whole_document(
    page: Page, web_url: str, query: str, problem: str
) -> None:
    """A missing, non-integer, negative, empty, reversed or out-of-range span opens the document
    unmarked and the status line says why."""
    document = fetch_document(web_url, SEED.name)
    n = len(document["text"])
    page.goto(f"{web_url}/?doc={SEED.name}{query}")
    expect(page.locator("#doc-view")).to_be_focused()
    expect(page.locator("#status")).to_have_text(
        f"Showing {SEED.name} without a highlight: {problem.format(n=f'{n} characters')}."
    )
    expect(page.locator("#doc-meta")).to_contain_text(f"The whole document, {n} characters")
    expect(page.locator("#doc-view mark")).to_have_count(0)
    assert page.locator("#doc-text").text_content() == document["text"]


@pytest.mark.e2e
def test_opening_a_citation_puts_its_deep_link_in_the_url(page: Page, web_url: str) -> None:
    """The page's own document view leaves a copyable deep link in the address bar; loading it
    marks the same span."""
    page.goto(f"{web_url}/")
    ask_in_page(page, TROOPS)
    expect(page.locator("#status")).to_contain_text("Answer ready", timeout=30_000)
    page.locator("#passage-2 button.citation").click()
    cited = page.locator("#doc-view mark#cited-span")
    expect(cited).to_have_count(1)
    first_text = cited.text_content()
    expected = httpx.post(f"{web_url}/v1/ask", json={"question": TROOPS}, timeout=60).json()
    c = expected["passages"][1]["citation"]
    link = span_link(web_url, c["source"], c["char_start"], c["char_end"])
    expect(page).to_have_url(link)

    page.goto(link)
    expect(cited).to_have_count(1)
    assert cited.text_content() == first_text == expected["passages"][1]["text"]
    expect(page.locator("#status")).to_contain_text(f"Showing {c['source']}, lines ")


@pytest.mark.e2e
def test_deep_link_waits_for_the_api_key(page: Page, keyed_url: str) -> None:
    """Behind a key the link asks for one, then opens once it is entered."""
    text = fetch_document(keyed_url, SEED.name, headers={"Authorization": f"Bearer {WEB_KEY}"})
    page.goto(span_link(keyed_url, SEED.name, 0, 40))
    expect(page.locator("#status")).to_contain_text("needs an API key to show", timeout=30_000)
    key_input = page.get_by_label("API key (optional, kept for this tab only)")
    expect(key_input).to_be_focused()
    key_input.fill(WEB_KEY)
    key_input.press("Enter")
    mark = page.locator("#doc-view mark#cited-span")
    expect(mark).to_have_count(1)
    assert mark.text_content() == text["text"][0:40]


def test_docs_render_their_operations_offline(page: Page, web_url: str) -> None:
    """Swagger UI loads only from groundqa itself: every other address is refused, as it is
    on a machine without network, and the page still lists the API's operations."""
    refused: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(web_url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", offline)
    page.goto(f"{web_url}/docs")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible()
    paths = set(operations.all_text_contents())
    assert {"/v1/ask", "/v1/chat/completions", "/v1/documents"} <= {p.strip() for p in paths}
    assert refused == []


# ----------------------------------------------------------------------------- collections


@pytest.fixture
def team_url(
    tmp_path: Path, fake_embedder: Embedder, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """A server over three collections with a keys file; the keys by name."""
    seeds = tmp_path / "seeds"
    texts = {
        "hr/leave.md": "# Leave\n\nEvery employee gets twenty days of paid leave a year.\n",
        "eng/runbook.md": "# Runbook\n\nTo restart the database, drain the queue first.\n",
        "welcome.txt": "Welcome to the handbook. Ask about leave.\n",
    }
    for name, text in texts.items():
        (seeds / name).parent.mkdir(parents=True, exist_ok=True)
        (seeds / name).write_text(text, encoding="utf-8")
    keys_file = tmp_path / "keys.toml"
    settings = Settings(
        _env_file=None, seeds_dir=seeds, index_dir=tmp_path / "index", keys_file=keys_file
    )
    Builder(settings, fake_embedder).build()
    keys = {
        "hr": add_key(keys_file, "hr", ["hr", "default"]),
        "eng": add_key(keys_file, "eng", ["eng"]),
    }
    with serve(create_app(settings, embedder=fake_embedder)) as url:
        yield url, keys


@pytest.mark.e2e
def test_page_selector_lists_only_the_keys_collections(
    page: Page, team_url: tuple[str, dict[str, str]]
) -> None:
    """Pasting a key fills the selector with that key's collections; an ask searches the one
    chosen. A key of one collection needs no selector."""
    url, keys = team_url
    page.goto(f"{url}/")
    selector = page.get_by_label("Collection", exact=True)
    expect(selector).to_be_hidden()
    key_input = page.get_by_label("API key (optional, kept for this tab only)")
    page.locator("#key-settings summary").click()
    key_input.fill(keys["hr"])
    key_input.press("Enter")
    expect(selector).to_be_visible()
    options = selector.locator("option")
    expect(options).to_have_text(["All my collections", "default", "hr"])
    selector.select_option("hr")
    ask_in_page(page, "How many days of paid leave?")
    expect(page.locator("#passages li").first).to_contain_text("twenty days")
    expect(page.locator("#passages")).not_to_contain_text("Welcome")
    key_input.fill(keys["eng"])
    key_input.press("Enter")
    expect(options).to_have_text(["All my collections", "eng"])
    expect(selector).to_be_hidden()


@pytest.fixture(scope="module")
def office_url(tmp_path_factory: pytest.TempPathFactory, web_embedder: Embedder) -> Iterator[str]:
    """A real server over a presentation and a workbook."""
    from tests.office_files import make_pptx, make_xlsx

    folder = tmp_path_factory.mktemp("web-office")
    seeds = folder / "seeds"
    seeds.mkdir()
    (seeds / "plan.pptx").write_bytes(make_pptx())
    (seeds / "budget.xlsx").write_bytes(make_xlsx())
    settings = Settings(_env_file=None, seeds_dir=seeds, index_dir=folder / "index")
    Builder(settings, web_embedder).build()
    with serve(create_app(settings, embedder=web_embedder)) as url:
        yield url


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("question", "label"),
    [
        ("What is the quarterly licence sales target?", "plan.pptx · slide 4, lines "),
        ("Which project does Ingrid own?", "budget.xlsx · Budget, rows 12–16, lines "),
    ],
)
def test_passages_name_their_slide_or_rows(
    page: Page, office_url: str, question: str, label: str
) -> None:
    """A passage of a deck names its slide, one of a workbook its sheet and rows."""
    page.goto(f"{office_url}/")
    ask_in_page(page, question)
    expect(page.locator("#status")).to_contain_text("Answer ready", timeout=30_000)
    expect(page.locator("#passage-1 button.citation")).to_contain_text(label)


# ----------------------------------------------------------------------------- generated answers


@pytest.fixture(scope="module")
def llm_upstream() -> Iterator[tuple[Upstream, str]]:
    """The deterministic fake LLM of the generation tests on a loopback port, and its URL."""
    state = Upstream()
    with serve_llm(fake_llm(state)) as url:
        yield state, url


@pytest.fixture(scope="module")
def llm_url(
    web_settings: Settings, web_embedder: Embedder, llm_upstream: tuple[Upstream, str]
) -> Iterator[str]:
    """A server over the real seed whose LLM is the fake one."""
    settings = web_settings.model_copy(update={"llm_base_url": llm_upstream[1], "llm_timeout": 5})
    with serve(create_app(settings, embedder=web_embedder)) as url:
        yield url


def generated_sentences(base_url: str) -> tuple[str, str]:
    """A sentence the seed backs word for word, citing [1], and one whose number was changed."""
    body = httpx.post(f"{base_url}/v1/ask", json={"question": TROOPS}, timeout=60).json()
    # The extractive answer's one quoted sentence (a highlight may add its neighbour).
    found = re.match(r"(.+?) \[1\]", body["answer"]["text"])
    assert found is not None, body["answer"]
    quoted = found.group(1).strip()
    assert "12,000" in quoted, quoted
    good = quoted.rstrip(".") + " [1]."
    return good, good.replace("12,000", "97,000")


@pytest.mark.e2e
def test_generated_answer_marks_every_sentence(
    page: Page, llm_url: str, llm_upstream: tuple[Upstream, str], tmp_path: Path
) -> None:
    """With an LLM the page offers to compose; each sentence shows its verdict in words, and a
    supported one opens exactly document text[char_start:char_end] in the document view."""
    good, changed = generated_sentences(llm_url)
    upstream = llm_upstream[0]
    upstream.mode, upstream.text = "ok", f"{good} {changed}"
    expected = httpx.post(
        f"{llm_url}/v1/ask", json={"question": TROOPS, "answer_mode": "generated"}, timeout=60
    ).json()
    answer, generation = expected["answer"]["text"], expected["generation"]
    assert [s["supported"] for s in generation["sentences"]] == [True, False]
    evidence = generation["sentences"][0]["evidence"]
    written = [answer[s["start"] : s["end"]].strip() for s in generation["sentences"]]
    assert written == [good, changed]  # each sentence as the LLM wrote it, markers included

    page.goto(f"{llm_url}/")
    control = page.get_by_label("Compose an answer with the LLM (every sentence checked)")
    expect(control).to_be_visible()
    control.check()
    with page.expect_request(lambda r: r.url.endswith("/v1/ask")) as sent:
        ask_in_page(page, TROOPS)
    assert (sent.value.post_data_json or {}).get("answer_mode") == "generated"

    sentences = page.locator("#answer li.generated-sentence")
    expect(sentences).to_have_count(2, timeout=30_000)
    expect(page.locator("#status")).to_contain_text("Composed answer ready")
    expect(page.locator("#answer")).to_contain_text("1 of 2 sentences supported")
    supported, flagged = sentences.nth(0), sentences.nth(1)
    expect(supported.locator(".verdict")).to_have_text("✓ Supported")
    expect(supported.locator(".sentence-text")).to_have_text(good)
    expect(flagged.locator(".verdict")).to_have_text("⚠ Unverified")
    expect(flagged.locator(".sentence-text")).to_have_text(changed)
    expect(flagged).to_contain_text("Not backed by the cited sources")
    expect(flagged.get_by_role("button")).to_have_count(0)  # nothing to open
    # The [1] markers still link to passage 1.
    expect(supported.locator("a.cite", has_text="[1]")).to_have_count(1)

    button = supported.get_by_role("button", name=re.compile("^Show the evidence for sentence 1"))
    button.click()
    doc_view = page.locator("#doc-view")
    expect(doc_view).to_be_focused()
    expect(page.locator("#doc-title")).to_have_text(evidence["source"])
    mark = doc_view.locator("mark#cited-span")
    expect(mark).to_have_count(1)
    text = fetch_document(llm_url, evidence["source"])["text"]
    assert mark.text_content() == text[evidence["char_start"] : evidence["char_end"]]
    assert mark.text_content() == evidence["text"]
    assert doc_view.locator("#doc-text").text_content() == text
    expect(page.locator("#doc-meta")).to_contain_text("Sentence 1 of the answer is supported by")
    assert f"start={evidence['char_start']}&end={evidence['char_end']}" in page.url
    page.screenshot(path=str(tmp_path / "generated.png"), full_page=True)
    page.keyboard.press("Escape")
    expect(doc_view).to_be_hidden()
    expect(button).to_be_focused()


@pytest.mark.e2e
def test_generated_answer_notes_the_fallback(
    page: Page, llm_url: str, llm_upstream: tuple[Upstream, str]
) -> None:
    """The LLM failing gives the quoted answer with a note saying so, never an error."""
    expected = httpx.post(f"{llm_url}/v1/ask", json={"question": TROOPS}, timeout=60).json()
    upstream = llm_upstream[0]
    upstream.mode = "500"
    try:
        page.goto(f"{llm_url}/")
        control = page.get_by_label("Compose an answer with the LLM (every sentence checked)")
        control.check()
        ask_in_page(page, TROOPS)
        note = page.locator("#answer .fallback-note")
        expect(note).to_contain_text("could not answer", timeout=30_000)
        expect(page.locator("#answer p.answer-text")).to_have_text(expected["answer"]["text"])
        expect(page.locator("#answer li.generated-sentence")).to_have_count(0)
        expect(page.locator("#status")).to_contain_text("quoted answer shown")
    finally:
        upstream.mode = "ok"


@pytest.mark.e2e
def test_without_an_llm_the_page_offers_no_generation(page: Page, web_url: str) -> None:
    """No LLM configured: no control, and the page asks exactly as before."""
    with page.expect_response(lambda r: r.url.endswith("/v1/models")):
        page.goto(f"{web_url}/")
    expect(page.locator("#generate-row")).to_be_hidden()
    with page.expect_request(lambda r: r.url.endswith("/v1/ask")) as sent:
        ask_in_page(page, TROOPS)
    assert sent.value.post_data_json == {"question": TROOPS}
    expect(page.locator("#answer .answer-text")).to_contain_text("12,000", timeout=30_000)
    expect(page.locator("#answer li.generated-sentence")).to_have_count(0)
