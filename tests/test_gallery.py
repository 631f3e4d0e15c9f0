"""The annotator's gallery: the page build_gallery makes, driven in headless Chromium.

The page is opened from disk (file://) and through a local web server; labels are set through
its controls, saved as cluster_labels.json and compared with what was set."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import PMC, REPO, SHARED, free_port, wait_for
from PIL import Image, ImageDraw

from transforms.annotate.gallery import build_gallery, embed_json
from transforms.annotate.thumbnails import make_thumbnail, thumbnail_path

# Debian's chromium and chromium-driver (make test installs them where it may).
CHROMIUM = Path(os.environ.get("BIOMEDICA_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("BIOMEDICA_CHROMEDRIVER", "/usr/bin/chromedriver"))
HOSTILE = "</script><img src=x onerror=alert(1)><!-- & \u2028 done"
TAXONOMY_FILE = SHARED / "biomedica" / "taxonomy_collapsed_and_filtered.json"
PANEL_SUBTYPES = [
    "single panel",
    "multiple panels: images",
    "multiple panels: plots",
    "multiple panels: images & plots",
    "multiple panels: images & assays",
]
EXPERT = {
    "panel_type": "multiple",
    "panel_subtype": "multiple panels: images & plots",
    "global_class": ["Microscopy", "Plots and Charts"],
    "local_class": ["fluorescence microscopy", "bar plot"],
}


# ---- the summary and the gallery on disk -------------------------------------------------


def drawn_jpeg(seed: int) -> bytes:
    """A small figure-like JPEG: bars, a curve or blobs, by seed."""
    image = Image.new("RGB", (320 + 40 * (seed % 3), 240), "white")
    draw = ImageDraw.Draw(image)
    kind = seed % 3
    for i in range(6):
        if kind == 0:
            height = 30 + (seed * 37 + i * 53) % 180
            draw.rectangle([20 + i * 48, 230 - height, 50 + i * 48, 230], fill=(40, 90, 200))
        elif kind == 1:
            draw.line([(0, 200 - i * 30), (320, 40 + i * 25)], fill=(200, 40, 40), width=3)
        else:
            x, y = (seed * 71 + i * 97) % 280, (seed * 13 + i * 61) % 200
            draw.ellipse([x, y, x + 40, y + 40], fill=(20, 160 + i * 10, 60))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def source_images(count: int) -> list[bytes]:
    """Real PMC figures where the shared data has them, drawn ones for the rest."""
    real = sorted(PMC.glob("packages/*/*.jpg"))[: count // 2]
    return [p.read_bytes() for p in real] + [drawn_jpeg(i) for i in range(count - len(real))]


def taxonomy() -> dict[str, list[str]]:
    if TAXONOMY_FILE.is_file():
        return json.loads(TAXONOMY_FILE.read_text())
    return {
        "Microscopy": ["fluorescence microscopy", "light microscopy"],
        "Plots and Charts": ["bar plot", "line plot", "scatter plot"],
        "Immuno Assays": ["immunoblot"],
        "Clinical Imaging": ["magnetic resonance", "computerized tomography"],
    }


def suggestion(source, panel_type, subtype, globals_, locals_, score):
    return {
        "source": source,
        "panel_type": panel_type,
        "panel_subtype": subtype,
        "global_class": globals_,
        "local_class": locals_,
        "score": score,
    }


SUGGESTIONS = [
    suggestion("caption_vote", "single", "single panel", ["Plots and Charts"], ["bar plot"], 0.71),
    suggestion("caption_vote", "multiple", "single panel", ["Immuno Assays"], ["immunoblot"], 0.62),
    suggestion(
        "zero_shot", "single", "single panel", ["Clinical Imaging"], ["magnetic resonance"], 0.4
    ),
    suggestion("caption_vote", "multiple", "multiple panels: images", ["Microscopy"], [], 0.5),
    None,
]


def make_summary(keys_per_cluster: list[list[str]], hostile_cluster: int = 3) -> dict:
    clusters = []
    for cid, keys in enumerate(keys_per_cluster):
        nearest = [
            {
                "key": key,
                "distance": round(0.05 * (rank + 1), 4),
                "caption": HOSTILE if cid == hostile_cluster and rank == 0 else f"Figure {key}.",
                "terms": ["bar plot"] if cid % 2 == 0 else [],
                "thumbnail": thumbnail_path(key),
            }
            for rank, key in enumerate(keys)
        ]
        top = SUGGESTIONS[cid % len(SUGGESTIONS)]
        expert = EXPERT if cid == 2 else None
        applied = (
            {"source": "expert", "label_id": 0, "score": 1.0, **EXPERT}
            if expert
            else {"source": top["source"], "label_id": None, "score": top["score"], **top}
            if top
            else {"source": None, "label_id": None, "score": None, **{k: None for k in EXPERT}}
        )
        clusters.append(
            {
                "cluster_id": cid,
                "size": 10 * len(keys) + cid,
                "nearest": nearest,
                "top_terms": [{"term": "bar plot", "count": 7}, {"term": HOSTILE, "count": 1}]
                if cid == hostile_cluster
                else [{"term": "western blot", "count": 3 + cid}],
                "suggested": [top] if top else [],
                "expert": expert,
                "applied": applied,
            }
        )
    return {
        "version": 1,
        "embedding_model": "pixels-v1",
        "random_weights": False,
        "cluster_model": "cluster_model-v1.faiss",
        "clusters": len(clusters),
        "pca_dims": 25,
        "taxonomy": taxonomy(),
        "panel_types": ["single", "multiple"],
        "panel_subtypes": PANEL_SUBTYPES,
        "cluster_list": clusters,
    }


def write_gallery(folder: Path, summary: dict, thumbs: dict[str, bytes]) -> Path:
    gallery = folder / "gallery"
    for name, data in build_gallery(summary).items():
        (gallery / name).parent.mkdir(parents=True, exist_ok=True)
        (gallery / name).write_bytes(data)
    for key, data in thumbs.items():
        (gallery / thumbnail_path(key)).parent.mkdir(parents=True, exist_ok=True)
        (gallery / thumbnail_path(key)).write_bytes(data)
    return gallery


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """5 clusters of 3..7 members, cluster 2 with an expert label, cluster 3 with a hostile
    caption and term; real thumbnails."""
    sizes = [7, 5, 4, 3, 6]
    images = source_images(sum(sizes))
    keys, thumbs, n = [], {}, 0
    for size in sizes:
        keys.append([])
        for _ in range(size):
            key = f"PMC{1000 + n}_F{n % 3 + 1}"
            keys[-1].append(key)
            thumbs[key] = make_thumbnail(images[n])
            n += 1
    summary = make_summary(keys)
    return summary, write_gallery(tmp_path_factory.mktemp("small"), summary, thumbs)


# ---- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(downloads):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"headless browser test needs Debian chromium and chromium-driver: missing {missing}"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    # The viewport itself at 1280x800, whatever the window's frame takes.
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield browser
    finally:
        browser.quit()


@contextlib.contextmanager
def web_server(folder: Path):
    """A static web server of `folder` on 127.0.0.1, quiet."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def screenshot(browser, path: Path, keep_as: str | None = None) -> None:
    """A screenshot under the test's tmp dir; `keep_as` also keeps a copy in bench/results/
    (git-ignored) for a person to look at."""
    assert browser.save_screenshot(str(path))
    if keep_as:
        results = REPO / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, results / keep_as)


def severe(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def open_fresh(browser, url: str) -> None:
    """The page with no labels kept from an earlier test."""
    browser.get(url)
    browser.execute_script("window.localStorage.clear()")
    browser.get(url)
    wait_for(lambda: browser.find_elements("css selector", ".sheet"), what="contact sheets")


def all_thumbnails_loaded(browser) -> list[str]:
    """Scroll every sheet into view (thumbnails load lazily), then the keys of the images that
    did not load."""
    for sheet in browser.find_elements("css selector", ".sheet"):
        browser.execute_script("arguments[0].scrollIntoView()", sheet)
    wait_for(
        lambda: browser.execute_script("return [...document.images].every(i => i.complete)"),
        what="thumbnails",
    )
    return browser.execute_script(
        "return [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.alt)"
    )


def click(browser, css: str) -> None:
    """Click like a user who scrolled the control to mid-screen, clear of the sticky bar."""
    element = browser.find_element("css selector", css)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def select(browser, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", element_id)).select_by_value(value)


def tick(browser, cluster: int, concept: str) -> None:
    """Open the cluster's concept picker and tick the concept by its visible label."""
    sheet = browser.find_element("id", f"cluster-{cluster}")
    details = sheet.find_element("css selector", "details.concepts")
    if not details.get_attribute("open"):
        click(browser, f"#cluster-{cluster} details.concepts > summary")
    label = sheet.find_element("xpath", f".//label[normalize-space()='{concept}']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", label)
    label.click()


def saved_labels(browser, downloads: Path) -> dict:
    for old in downloads.glob("*"):
        old.unlink()
    click(browser, "#save")
    target = downloads / "cluster_labels.json"
    wait_for(target.is_file, what="cluster_labels.json download")
    wait_for(lambda: target.read_text().strip().endswith("}"), what="the download to finish")
    return json.loads(target.read_text())


def sheet_label(browser, cluster: int) -> dict:
    """What a sheet's controls show, read from the page."""
    return browser.execute_script(
        """const id = arguments[0];
        return {panel_type: document.getElementById('pt-' + id).value,
                panel_subtype: document.getElementById('ps-' + id).value,
                chosen: document.querySelector('#cluster-' + id + ' .chosen').textContent,
                state: document.getElementById('cluster-' + id).dataset.state};""",
        cluster,
    )


# ---- the page as built -----------------------------------------------------------------------


def test_embedded_json_cannot_end_the_script_block():
    text = embed_json({"caption": HOSTILE, "nan": float("nan")})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"caption": HOSTILE, "nan": None}


def test_page_is_one_self_contained_file(small):
    summary, gallery = small
    files = build_gallery(summary)
    assert set(files) == {"index.html"}
    page = files["index.html"].decode()
    assert (gallery / "index.html").read_bytes() == files["index.html"]
    # Exactly two executable pieces: the data block is inert JSON, one script, one style.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert HOSTILE not in page and "</script><img" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page must not load remote files"
    assert "Content-Security-Policy" in page


# ---- the page in a browser -------------------------------------------------------------------


@pytest.mark.parametrize("via", ["file", "http"])
def test_page_shows_every_cluster_without_errors(driver, small, via, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    summary, gallery = small
    with contextlib.ExitStack() as stack:
        url = (
            (gallery / "index.html").as_uri()
            if via == "file"
            else stack.enter_context(web_server(gallery))
        )
        open_fresh(driver, url)
        ids = [
            s.get_attribute("data-cluster") for s in driver.find_elements("css selector", ".sheet")
        ]
        assert ids == [str(c["cluster_id"]) for c in summary["cluster_list"]]
        for cluster in summary["cluster_list"]:
            sheet = driver.find_element("id", f"cluster-{cluster['cluster_id']}")
            alts = [i.get_attribute("alt") for i in sheet.find_elements("css selector", "img")]
            assert alts == [m["key"] for m in cluster["nearest"]]
            for img in sheet.find_elements("css selector", "img"):
                assert img.get_attribute("loading") == "lazy"
            assert f"{cluster['size']} members" in sheet.text
        assert all_thumbnails_loaded(driver) == []

        # The hostile caption ran nothing, injected nothing, and reads as the text it is.
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018
        assert (
            driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
        )
        assert driver.execute_script("return document.querySelectorAll('img').length") == sum(
            len(c["nearest"]) for c in summary["cluster_list"]
        )
        captions = driver.execute_script(
            "return [...document.querySelectorAll('#cluster-3 .caption')].map(e => e.textContent)"
        )
        assert captions[0] == HOSTILE
        assert HOSTILE in driver.execute_script(
            "return document.querySelector('#cluster-3 .chips').textContent"
        )
        # Expert labels are preset, nothing else is.
        assert sheet_label(driver, 2)["panel_subtype"] == EXPERT["panel_subtype"]
        assert sheet_label(driver, 0) == {
            "panel_type": "",
            "panel_subtype": "",
            "chosen": "(none chosen)",
            "state": "unlabelled",
        }
        assert "Labelled 1 of 5" in driver.find_element("id", "count").text
        assert severe(driver) == []
        driver.execute_script("window.scrollTo(0, 0)")
        screenshot(
            driver, tmp_path / f"gallery-{via}.png", "gallery.png" if via == "file" else None
        )


def test_labels_set_in_the_page_come_back_in_the_saved_file(driver, small, downloads, tmp_path):
    _, gallery = small
    open_fresh(driver, (gallery / "index.html").as_uri())

    # Cluster 0 by hand: panel type, subtype, a local concept (its global comes with it) and
    # a second global concept.
    select(driver, "pt-0", "multiple")
    select(driver, "ps-0", "multiple panels: images & assays")
    tick(driver, 0, "immunoblot")
    tick(driver, 0, "Microscopy")
    hand = {
        "panel_type": "multiple",
        "panel_subtype": "multiple panels: images & assays",
        "global_class": ["Immuno Assays", "Microscopy"],
        "local_class": ["immunoblot"],
    }
    assert sheet_label(driver, 0)["state"] == "labelled"
    driver.find_element("id", "find-0").send_keys("micro")
    driver.execute_script("document.getElementById('cluster-0').scrollIntoView()")
    screenshot(driver, tmp_path / "concepts.png", "gallery-concepts.png")
    driver.find_element("id", "find-0").clear()
    assert saved_labels(driver, downloads) == {"0": hand, "2": EXPERT}
    assert list(saved_labels(driver, downloads)) == ["0", "2"]

    # "Accept suggestion" copies cluster 1's top suggestion into its controls.
    click(driver, "#cluster-1 button.accept")
    assert sheet_label(driver, 1) == {
        "panel_type": "multiple",
        "panel_subtype": "single panel",
        "chosen": "(2): Immuno Assays › immunoblot",
        "state": "labelled",
    }
    # A cluster with no suggestion has nothing to accept.
    assert not driver.find_element("css selector", "#cluster-4 button.accept").is_enabled()
    # Only a panel type: incomplete, so not saved.
    select(driver, "pt-4", "single")
    assert sheet_label(driver, 4)["state"] == "incomplete"

    # A reload keeps every label (localStorage), and the file says the same.
    driver.refresh()
    wait_for(lambda: driver.find_elements("css selector", ".sheet"), what="sheets after reload")
    assert sheet_label(driver, 0)["panel_subtype"] == hand["panel_subtype"]
    assert sheet_label(driver, 1)["chosen"] == "(2): Immuno Assays › immunoblot"
    assert sheet_label(driver, 4)["state"] == "incomplete"
    suggested = {k: SUGGESTIONS[1][k] for k in EXPERT}
    assert saved_labels(driver, downloads) == {"0": hand, "1": suggested, "2": EXPERT}

    # Clearing the expert's cluster takes it out of the file.
    click(driver, "#cluster-2 button.clear")
    assert saved_labels(driver, downloads) == {"0": hand, "1": suggested}

    # A cluster_labels.json loaded back sets the controls (ids not in the gallery left out).
    labels_file = tmp_path / "cluster_labels.json"
    labels_file.write_text(json.dumps({"3": EXPERT, "99": EXPERT}))
    driver.find_element("id", "load").send_keys(str(labels_file))
    wait_for(lambda: sheet_label(driver, 3)["state"] == "labelled", what="loaded labels")
    assert "Loaded 1 labels" in driver.find_element("id", "status").text
    assert saved_labels(driver, downloads) == {"0": hand, "1": suggested, "3": EXPERT}

    # The keyboard alone completes cluster 4: a subtype typed into its select, the concept
    # picker opened with Enter, the first global concept ticked with Space.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    subtype = driver.find_element("id", "ps-4")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", subtype)
    subtype.send_keys("s")
    focused = "return document.activeElement.tagName + ' ' + document.activeElement.className"
    # Past "Clear" ("Accept suggestion" is disabled: cluster 4 has no suggestion).
    ActionChains(driver).send_keys(Keys.TAB, Keys.TAB).perform()
    assert driver.execute_script(focused) == "SUMMARY "
    ActionChains(driver).send_keys(Keys.ENTER, Keys.TAB, Keys.TAB).perform()
    assert driver.execute_script(focused) == "INPUT global"
    ActionChains(driver).send_keys(Keys.SPACE).perform()
    keyed = {
        "panel_type": "single",
        "panel_subtype": "single panel",
        "global_class": [next(iter(taxonomy()))],
        "local_class": [],
    }
    wait_for(lambda: sheet_label(driver, 4)["state"] == "labelled", what="keyboard label")
    assert saved_labels(driver, downloads)["4"] == keyed

    # The filter: unlabelled clusters only.
    select(driver, "filter-status", "unlabelled")
    ids = [s.get_attribute("data-cluster") for s in driver.find_elements("css selector", ".sheet")]
    assert ids == ["2"]
    assert severe(driver) == []


def test_two_thousand_clusters_stay_responsive(driver, tmp_path):
    """BIOMEDICA's 2,000 clusters of 16 members: one page of sheets at a time."""
    pool = [f"PMC{9000 + i}_F1" for i in range(40)]
    thumbs = {key: make_thumbnail(drawn_jpeg(i)) for i, key in enumerate(pool)}
    keys = [[pool[(c + m) % len(pool)] for m in range(16)] for c in range(2000)]
    summary = make_summary(keys)
    for cluster in summary["cluster_list"]:  # captions as long as annotate keeps (300 chars)
        for m in cluster["nearest"]:
            m["caption"] = (f"{m['key']}: western blot & MRI <i>in vivo</i> of cells. " * 8)[:300]
    started = time.perf_counter()
    gallery = write_gallery(tmp_path, summary, thumbs)
    built = time.perf_counter() - started
    size_mb = (gallery / "index.html").stat().st_size / 1e6
    open_fresh(driver, (gallery / "index.html").as_uri())
    shown = driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
    )
    assert len(driver.find_elements("css selector", ".sheet")) == 25
    assert "Page 1 of 80" in driver.find_element("css selector", ".pager .where").text
    assert "Labelled 1 of 2000" in driver.find_element("id", "count").text

    started = time.perf_counter()
    click(driver, ".pager .next")
    wait_for(
        lambda: driver.find_element("css selector", ".sheet").get_attribute("data-cluster") == "25",
        what="page 2",
    )
    turned = time.perf_counter() - started
    goto = driver.find_element("id", "goto")
    goto.send_keys("1234\n")
    wait_for(
        lambda: driver.execute_script("return document.activeElement.id") == "pt-1234",
        what="the jump to cluster 1234",
    )
    assert "Page 50 of 80" in driver.find_element("css selector", ".pager .where").text
    select(driver, "filter-concept", "g:Clinical Imaging")
    assert "of 400 shown" in driver.find_element("css selector", ".pager .where").text
    select(driver, "filter-status", "unlabelled")
    assert "of 399 shown" in driver.find_element("css selector", ".pager .where").text
    assert severe(driver) == []
    print(
        f"\n2000 clusters: build {built:.2f} s, page {size_mb:.1f} MB, "
        f"first page shown {shown / 1000:.2f} s, next page {turned:.2f} s"
    )
    assert shown < 5000 and turned < 2.0


# ---- the round trip: annotate -> the page -> annotate again ----------------------------------


def test_labels_saved_from_a_real_gallery_reach_every_member(driver, downloads, tmp_path):
    """An annotate run on the sample corpus writes the gallery; an expert labels a cluster in
    it and saves; annotate again with the saved file and the saved clustering model puts
    that label on every member of the cluster."""
    from conftest import read_table, run_extract

    from pipelines import annotate, embed
    from transforms.pmc.sample_corpus import generate_corpus

    corpus, ext, emb, ann = (tmp_path / n for n in ("corpus", "extract", "embed", "annotate"))
    generate_corpus(str(corpus), 12, seed=4, image_side=256)
    run_extract(["--source", str(corpus), "--output", str(ext)])
    embed.run(["--input", str(ext), "--output", str(emb)])
    common = ["--input", str(ext), "--embeddings", str(emb), "--clusters", "4"]
    annotate.run([*common, "--output", str(ann)])

    open_fresh(driver, (ann / "gallery" / "index.html").as_uri())
    assert all_thumbnails_loaded(driver) == []
    assert severe(driver) == []
    select(driver, "pt-1", "single")
    select(driver, "ps-1", "single panel")
    tick(driver, 1, "confocal microscopy")
    saved = saved_labels(driver, downloads)
    label = {
        "panel_type": "single",
        "panel_subtype": "single panel",
        "global_class": ["Microscopy"],
        "local_class": ["confocal microscopy"],
    }
    assert saved == {"1": label}
    labels_file = tmp_path / "cluster_labels.json"
    shutil.copy(downloads / "cluster_labels.json", labels_file)

    again = tmp_path / "again"
    annotate.run(
        [
            *common,
            "--output",
            str(again),
            "--cluster_model",
            str(ann / "cluster_model-v1.faiss"),
            "--cluster_labels",
            str(labels_file),
        ]
    )
    members = [r for r in read_table(again / "annotations") if r["image_cluster_id"] == 1]
    assert members
    assert len(members) == sum(
        1 for r in read_table(ann / "annotations") if r["image_cluster_id"] == 1
    )
    for row in members:
        assert row["image_label_source"] == "expert" and row["image_label_score"] == 1.0
        assert row["image_panel_type"] == "single"
        assert row["image_primary_label"] == ["Microscopy"]
        assert row["image_secondary_label"] == ["confocal microscopy"]
