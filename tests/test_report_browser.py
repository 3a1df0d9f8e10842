"""The HTML report in a real browser: headless Chromium, network blocked.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them);
the tests are skipped, with that reason, only when they are missing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

import funnelstats as fs

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium is not installed (Debian packages chromium and chromium-driver; "
    ".ci/run installs them)",
)

GENERATED = pd.Timestamp("2025-01-06 07:00:00", tz="UTC")
XSS = "<script>alert(1)</script>"
XSS_SEGMENT = '<img src=x onerror="alert(2)">'


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="funnelstats-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--allow-file-access-from-files",
        f"--user-data-dir={profile}",
        # no network: every host resolves to nothing and every proxy hop goes nowhere
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9",
        "--window-size=1280,1800",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.execute_cdp_cmd("Network.enable", {})
    drv.execute_cdp_cmd(
        "Network.setBlockedURLs",
        {"urls": ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]},
    )
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(driver, path: Path) -> list[str]:
    """Load ``path``; return the URLs of every request the page made."""
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get_log("browser")
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return urls + list(resources)


def _external(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("file:", "data:", "about:"))]


def _write_xss_export(folder: Path) -> Path:
    """A generic export whose biggest open deal is named like a script tag."""
    rows = [
        ("D1", "Lead", "2024-01-02", 1000, "SMB"),
        ("D1", "Proposal", "2024-01-09", 1000, "SMB"),
        ("D1", "Closed Won", "2024-02-01", 1000, "SMB"),
        ("D2", "Lead", "2024-01-05", 500, XSS_SEGMENT),
        ("D2", "Closed Lost", "2024-01-20", 500, XSS_SEGMENT),
        (XSS, "Lead", "2024-02-10", 99000, XSS_SEGMENT),
        (XSS, "Proposal", "2024-02-20", 99000, XSS_SEGMENT),
        ("D4", "Lead", "2024-02-11", 2000, "SMB"),
    ]
    df = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount", "segment"])
    path = folder / "export.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory) -> tuple[Path, fs.report.Report]:
    out = tmp_path_factory.mktemp("browser-report")
    data = fs.load_sample()
    rep = fs.make_report(data, by="Segment", generated_at=GENERATED)
    paths = rep.write(out, formats=["html"])
    return paths["html"], rep


def test_report_renders_offline_with_every_section_and_image(driver, sample_report):
    path, rep = sample_report
    urls = _open(driver, path)
    assert driver.title.startswith("Sales funnel report")
    assert driver.execute_script("return document.readyState") == "complete"
    # it makes no request beyond its own file and inline data
    assert _external(urls) == []
    assert any(u.startswith("file:") for u in urls)
    # every section heading is there and visible
    headings = driver.execute_script(
        "return [...document.querySelectorAll('main h2')]"
        ".map(h => [h.textContent.trim(), h.getBoundingClientRect().height])"
    )
    assert [h for h, _ in headings] == list(rep.titles)
    assert all(height > 0 for _, height in headings)
    # every image decoded and laid out with a non-zero size
    images = driver.execute_script(
        "return [...document.images].map(i => ({complete: i.complete, nw: i.naturalWidth,"
        " w: i.getBoundingClientRect().width, h: i.getBoundingClientRect().height}))"
    )
    n_charts = sum(s.chart is not None for s in rep.sections)
    assert len(images) == n_charts >= 2
    for img in images:
        assert img["complete"] and img["nw"] > 0 and img["w"] > 100 and img["h"] > 50, img
    # the page logged no error (a blocked resource or a CSP violation would show here)
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert driver.execute_script("return document.querySelectorAll('script').length") == 0


def test_request_detector_catches_an_external_fetch(driver, tmp_path):
    """The no-request check can fail: a page that loads a remote font and image is caught."""
    page = tmp_path / "leaky.html"
    page.write_text(
        "<!DOCTYPE html><html><head><link rel='stylesheet' "
        "href='https://fonts.example.com/css?family=Inter'></head>"
        "<body><h1>x</h1><img src='http://cdn.example.com/logo.png'></body></html>",
        encoding="utf-8",
    )
    urls = _open(driver, page)
    external = _external(urls)
    assert any("fonts.example.com" in u for u in external)
    assert any("cdn.example.com" in u for u in external)


def test_script_in_deal_and_attribute_names_is_shown_as_text(driver, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    export = _write_xss_export(tmp_path)
    data = fs.read(export, exported_at="2024-03-01")
    paths = fs.build_report(
        data,
        out_dir=tmp_path / "out",
        formats=["html"],
        by="segment",
        generated_at=GENERATED,
        inputs=[export],
    )
    urls = _open(driver, paths["html"])
    assert _external(urls) == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - an alert would mean the name ran as script
    text = driver.execute_script("return document.body.innerText")
    assert XSS in text
    assert XSS_SEGMENT in text
    assert driver.execute_script("return document.querySelectorAll('script').length") == 0
    assert driver.execute_script("return document.querySelectorAll('main img[src=x]').length") == 0
