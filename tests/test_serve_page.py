"""The search page of `biomedica serve`, driven in headless Chromium against the real server.

A small real dataset is built (extract, embed, annotate, shard --annotations), indexed with
`python -m pipelines.index` and served by `python -m pipelines.serve` in a subprocess. The page
is then used as a person would: a word from a real caption typed and Enter pressed, a license
group chosen, a label ticked, a hit opened, a broken filter typed. What it shows is compared
with the dataset's own rows and with the API's JSON for the same request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, free_port, read_table, run_extract, wait_for

from pipelines import annotate, embed, shard
from transforms.pmc.sample_corpus import generate_corpus

# Debian's chromium and chromium-driver (`make browser` installs them where it may).
CHROMIUM = Path(os.environ.get("BIOMEDICA_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("BIOMEDICA_CHROMEDRIVER", "/usr/bin/chromedriver"))
SERVER_START_S = 180
K = 20


# ---- the dataset, its index and the server ---------------------------------------------------


def tokens(text) -> set[str]:
    """The words SQLite's unicode61 tokenizer sees (letters and digits), lower case."""
    return set(re.findall(r"[^\W_]+", str(text or "").lower()))


def query_word(rows: list[dict]) -> tuple[str, set[str]]:
    """A word of real captions whose hits can be predicted exactly: in no title or in-line
    reference, no other word of the dataset shares its first five letters (so no stemmed
    form matches elsewhere), and its captions fit on one page of K. The word, and the keys
    of the samples whose captions hold it."""
    captions = {r["key"]: tokens(r["caption"]) for r in rows}
    elsewhere = set()
    for r in rows:
        elsewhere |= tokens(r["article_title"]) | tokens(" ".join(r["image_context"] or []))
    vocabulary = elsewhere.union(*captions.values())
    candidates = []
    for word in sorted(set().union(*captions.values())):
        if not (word.isascii() and word.isalpha() and len(word) >= 6) or word in elsewhere:
            continue
        if any(t != word and t[:5] == word[:5] for t in vocabulary):
            continue
        keys = {key for key, words in captions.items() if word in words}
        groups = {r["article_license_group"] for r in rows if r["key"] in keys}
        if 2 <= len(keys) <= K:
            candidates.append((len(groups) > 1, len(keys), word, keys))
    assert candidates, "no caption word fits the test: change the corpus seed"
    _, _, word, keys = max(candidates)
    return word, keys


def get(url: str) -> tuple[int, dict]:
    """(status, JSON body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_until_serving(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"biomedica serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(
        f"biomedica serve did not answer /healthz in {SERVER_START_S} s:\n{log.read_text()}"
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_page")
    corpus, ext, emb, ann, ds, idx = (
        root / n for n in ("corpus", "extract", "embed", "annotate", "dataset", "index")
    )
    quiet = ["--log_level", "ERROR"]
    generate_corpus(str(corpus), 14, seed=3, image_side=256)
    assert run_extract(["--source", str(corpus), "--output", str(ext), *quiet])["balanced"]
    assert embed.run(["--input", str(ext), "--output", str(emb), *quiet])["balanced"]
    annotate.run(
        ["--input", str(ext), "--embeddings", str(emb), "--output", str(ann), "--clusters", "3"]
        + quiet
    )
    sharded = shard.run(
        ["--input", str(ext), "--annotations", str(ann), "--output", str(ds)] + quiet
    )
    assert sharded["balanced"]
    # The index and the server run as a user runs them: their own processes, this checkout.
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    subprocess.run(
        [sys.executable, "-m", "pipelines.index", "--dataset", str(ds), "--embeddings", str(emb)]
        + ["--output", str(idx), *quiet],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    port = free_port()
    log = root / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.serve", "--dataset", str(ds), "--index", str(idx)]
            + ["--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url, log)
        rows = read_table_tree(ds / "parquet")
        yield {"url": url, "rows": {r["key"]: r for r in rows}, "root": root}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_table_tree(folder: Path) -> list[dict]:
    rows = []
    for group in sorted(p for p in folder.iterdir() if p.is_dir()):
        rows.extend(read_table(group))
    return rows


# ---- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"the page's browser test needs Debian chromium and chromium-driver: {missing}")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


def searches(driver) -> int:
    return int(driver.find_element("id", "results").get_attribute("data-searches") or 0)


def settled(driver, before: int, what: str) -> str:
    """Wait for the search after `before` finished ones; its state (done, failed, idle)."""
    wait_for(lambda: searches(driver) > before, what=what)
    return driver.find_element("id", "results").get_attribute("data-state")


def shown(driver) -> list[dict]:
    """The hits in the grid as a person sees them."""
    return driver.execute_script(
        """return [...document.querySelectorAll('#grid .hit')].map(h => ({
             key: h.dataset.key,
             caption: h.querySelector('.caption').textContent,
             group: h.querySelector('.badge.group').textContent,
             license: h.querySelector('.badge.license').textContent,
             labels: [...h.querySelectorAll('.chips li')].map(l => l.textContent),
             alt: h.querySelector('img').alt}))"""
    )


def images_loaded(driver) -> list[str]:
    """Scroll every hit into view (thumbnails load lazily), wait for them; the keys of those
    that did not load."""
    for hit in driver.find_elements("css selector", "#grid .hit"):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", hit)
    wait_for(
        lambda: driver.execute_script(
            "return [...document.querySelectorAll('#grid img')].every(i => i.complete)"
        ),
        what="thumbnails",
    )
    return driver.execute_script(
        "return [...document.querySelectorAll('#grid .hit')]"
        ".filter(h => !(h.querySelector('img').naturalWidth > 0)).map(h => h.dataset.key)"
    )


def api_hits(url: str, **params) -> dict:
    status, body = get(url + "/search?" + urllib.parse.urlencode(params))
    assert status == 200, body
    return body


def screenshot(driver, served, capsys, name: str) -> Path:
    """A screenshot in the test's folder (and in $BIOMEDICA_SCREENSHOT_DIR where set), its
    path printed past pytest's capture for a person to look at."""
    path = served["root"] / name
    assert driver.save_screenshot(str(path))
    keep = os.environ.get("BIOMEDICA_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


# ---- the page --------------------------------------------------------------------------------


def test_the_page_searches_filters_and_shows_a_sample(served, browser, capsys):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    url, rows = served["url"], served["rows"]
    word, expected = query_word(list(rows.values()))

    browser.get(url + "/")
    wait_for(
        lambda: browser.find_elements("css selector", "#license option[value='commercial']"),
        what="the license groups from /facets",
    )
    facets = get(url + "/facets")[1]
    notices = browser.find_element("id", "notices").text
    assert ("Semantic search off" in notices) == (not facets["semantic"])
    assert ("RANDOM WEIGHTS" in notices) == bool(facets["random_weights"])

    # A word of real captions, typed and Enter pressed.
    before = searches(browser)
    browser.find_element("id", "q").send_keys(word, Keys.ENTER)
    assert settled(browser, before, "the first search") == "done"
    hits = shown(browser)
    assert {h["key"] for h in hits} == expected
    api = api_hits(url, q=word, k=K)
    assert [h["key"] for h in hits] == [h["key"] for h in api["hits"]]
    for hit in hits:
        assert word in tokens(rows[hit["key"]]["caption"])
        # The excerpt is the caption's start; the alt text is the caption too.
        assert rows[hit["key"]]["caption"].split()[0] in hit["caption"]
        assert hit["alt"].split()[0] == rows[hit["key"]]["caption"].split()[0]
        assert hit["group"] == rows[hit["key"]]["article_license_group"]
        assert hit["license"] == rows[hit["key"]]["article_license"]
        assert hit["labels"] == list(rows[hit["key"]]["image_primary_label"] or [])
    assert images_loaded(browser) == []
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query) == {"q": [word]}
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, served, capsys, "search_page.png")

    # A license group: every hit carries its badge, and the URL keeps it for a reload.
    groups = sorted({rows[k]["article_license_group"] for k in expected})
    group = groups[-1]
    before = searches(browser)
    Select(browser.find_element("id", "license")).select_by_value(group)
    assert settled(browser, before, "the license-group search") == "done"
    hits = shown(browser)
    want = {k for k in expected if rows[k]["article_license_group"] == group}
    assert {h["key"] for h in hits} == want and all(h["group"] == group for h in hits)
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)
    assert state == {"q": [word], "license": [group]}
    browser.get(browser.current_url)
    wait_for(lambda: searches(browser) >= 1, what="the reloaded search")
    assert [h["key"] for h in shown(browser)] == [h["key"] for h in hits]
    assert browser.find_element("id", "q").get_attribute("value") == word

    # A label, no words: the first K samples with it, in id order, as the API gives them.
    labelled = sorted({lab for r in rows.values() for lab in r["image_primary_label"] or []})
    assert labelled, "the annotated dataset has no labels"
    label = labelled[0]
    browser.find_element("id", "q").clear()
    before = searches(browser)
    Select(browser.find_element("id", "license")).select_by_value("")
    assert settled(browser, before, "no words, no filter") == "idle"
    assert shown(browser) == []
    before = searches(browser)
    box = browser.find_element("css selector", f"#labels input[value='{label}']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()  # a label searches at once, as a license group does
    assert settled(browser, before, "the label search") == "done"
    hits = shown(browser)
    where = browser.find_element("id", "composed").text
    assert where == f'any_of(image_primary_label, ["{label}"])'
    api = api_hits(url, q="", k=K, where=where)
    assert [h["key"] for h in hits] == [h["key"] for h in api["hits"]]
    assert hits and all(label in h["labels"] for h in hits)
    having = [key for key, r in rows.items() if label in (r["image_primary_label"] or [])]
    assert len(hits) == min(K, len(having)) and api["total_matching"] == len(having)
    before = searches(browser)
    box.click()
    assert settled(browser, before, "the label cleared") == "idle"

    # The sample view: the full caption, the article's title linking to PMC, all metadata.
    before = searches(browser)
    browser.find_element("id", "q").send_keys(word, Keys.ENTER)
    assert settled(browser, before, "the search again") == "done"
    first = shown(browser)[0]["key"]
    row = rows[first]
    # By keyboard: the thumbnail is a button; Enter opens the view, Esc closes it and gives
    # the focus back.
    thumb = browser.find_element("css selector", "#grid .hit .thumb")
    thumb.send_keys(Keys.ENTER)
    view = browser.find_element("id", "view")
    wait_for(lambda: view.get_attribute("open") is not None, what="the sample view")
    assert browser.find_element("id", "view-title").text == row["article_title"]
    link = browser.find_element("css selector", "#view-title a.pmc")
    accession = row["article_accession_id"]
    assert link.get_attribute("href") == f"https://pmc.ncbi.nlm.nih.gov/articles/{accession}/"
    assert browser.find_element("id", "view-caption").get_attribute("textContent") == row["caption"]
    wait_for(
        lambda: browser.execute_script(
            "const i = document.getElementById('view-image'); return i.complete && i.naturalWidth"
        ),
        what="the full image",
    )
    metadata = wait_for(
        lambda: browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#view-meta tr')]"
            ".map(r => [r.cells[0].textContent, r.cells[1].textContent]))"
        ),
        what="the sample's metadata",
    )
    assert metadata["key"] == first and metadata["article_accession_id"] == accession
    screenshot(browser, served, capsys, "search_page_sample.png")
    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    wait_for(lambda: view.get_attribute("open") is None, what="Esc to close the view")
    assert browser.switch_to.active_element == thumb

    # A broken advanced filter: the API's own message, shown as the page's error.
    broken = "article_year >> 2020"
    browser.find_element("css selector", "#advanced summary").click()
    browser.find_element("id", "where").send_keys(broken)
    before = searches(browser)
    browser.find_element("id", "q").send_keys(Keys.ENTER)
    assert settled(browser, before, "the broken filter") == "failed"
    status, body = get(url + "/search?" + urllib.parse.urlencode({"q": word, "where": broken}))
    assert status == 400 and body["error"]["code"] == "invalid_where"
    error = browser.find_element("id", "error")
    assert error.is_displayed()
    assert error.find_element("css selector", ".message").text == body["error"]["message"]
    assert shown(browser) == []
    screenshot(browser, served, capsys, "search_page_error.png")

    # Nothing the page did broke in its console but the refused request itself.
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("400 (Bad Request)" in e["message"] for e in logs), logs


def test_hostile_text_in_a_query_stays_text(served, browser):
    """Markup typed into the query reaches the page only as text: no element is made of it."""
    browser.get(served["url"] + "/?q=" + urllib.parse.quote('<img src=x onerror="window.hit=1">'))
    wait_for(lambda: searches(browser) >= 1, what="the search from the URL")
    assert browser.execute_script("return window.hit") is None
    assert browser.find_elements("css selector", "#grid img[src='x'], #status img") == []
    assert "<img" in browser.find_element("id", "q").get_attribute("value")
    assert "<img" in browser.find_element("id", "status").text


def test_the_page_loads_nothing_from_elsewhere_and_writes_no_markup():
    """Without a browser: the assets reference only this server (relative URLs, a CSP that
    allows nothing else) and the script never turns text into markup."""
    page = REPO / "server" / "page"
    html = (page / "index.html").read_text()
    # The script's code, its whole-line comments (which may name what it never does) left out.
    script = re.sub(r"(?m)^\s*//.*$", "", (page / "app.js").read_text())
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy and "default-src 'none'" in policy.group(1)
    assert "script-src 'self';" in policy.group(1) and "connect-src 'self'" in policy.group(1)
    references = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sorted(references) == ["#results", "data:,", "page/app.js", "page/style.css"]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert not re.search(r"https?://", script + (page / "style.css").read_text())
