"""The live dashboard in a real headless Chromium (Debian's chromium + chromium-driver, selenium).

Seeded with a week of history for three greenhouses, the page must load without console
errors and without fetching anything from another origin, show the seeded greenhouses in the
latest table (marked synthetic: the week is a backfill) and in every trend chart, and show a
400 °C spike within seconds of its POST (a device's reading: not marked).
A screenshot is saved under test-artifacts/ ($SMARTFARM_TEST_ARTIFACTS); with
SMARTFARM_UPDATE_SCREENSHOT=1 it also replaces docs/dashboard.png.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from serve_support import ServeProcess, reading

from smartfarm_cli.targets.local import LocalTarget

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
GREENHOUSES = ["gh-1", "gh-2", "gh-3"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="headless browser test needs Debian's chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver; .ci/run installs them)",
)


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sf-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1150",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_dashboard_shows_seeded_greenhouses_and_a_new_spike(tmp_path, browser):
    home = tmp_path / "home"
    seed = LocalTarget(home)
    seed.backfill(days=7, greenhouses=3, devices=2, interval_s=300, anomaly_rate=0.002, seed=3)
    seed.close()
    artifacts = Path(os.environ.get("SMARTFARM_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with ServeProcess(home, "--flush-age", "1") as server:
        try:
            seen_after = _check_page(browser, server, artifacts)
        except AssertionError:
            browser.save_screenshot(str(artifacts / "dashboard-failure.png"))
            (artifacts / "dashboard-failure.log").write_text(
                json.dumps(browser.get_log("browser"), indent=1) + "\n" + server.output()
            )
            raise
    assert seen_after < 15


def _check_page(browser, server, artifacts: Path) -> float:
    browser.get(server.url + "/")
    js = browser.execute_script

    def latest_greenhouses():
        rows = js(
            "return [...document.querySelectorAll('#latest tbody tr[data-greenhouse]')]"
            ".map(r => r.dataset.greenhouse)"
        )
        return sorted(set(rows)) if rows else None

    assert _wait(latest_greenhouses, 20, "the latest table") == GREENHOUSES
    # the seeded week is a backfill: every device is marked synthetic, with the footnote
    marks = js(
        "return [...document.querySelectorAll('#latest tbody tr[data-greenhouse]')]"
        ".map(r => [r.dataset.device, r.cells[1].textContent])"
    )
    assert marks and all(text == device + "*" for device, text in marks), marks
    assert js("return document.getElementById('latest-synthetic').hidden") is False
    for metric in ("temperature", "humidity", "co2"):
        drawn = _wait(
            lambda m=metric: js(f"return document.getElementById('chart-{m}').dataset.greenhouses"),
            20,
            f"the {metric} chart",
        )
        assert drawn.split(",") == GREENHOUSES
        assert int(js(f"return document.getElementById('chart-{metric}').dataset.points")) > 100
        assert js(f"return document.querySelectorAll('#chart-{metric} canvas').length") == 1

    posted = time.monotonic()
    answer = httpx.post(
        server.url + "/record",
        json=reading("gh-2", "probe-1", temperature=400),
        headers={"x-api-key": server.key},
    )
    assert answer.status_code == 200

    def spike_shown():
        return js(
            "return [...document.querySelectorAll('#spikes tbody tr')]"
            ".some(r => r.dataset.device === 'probe-1' && r.dataset.rule === 'impossible')"
        )

    _wait(spike_shown, 15, "the 400 °C spike in the spikes table")
    seen_after = time.monotonic() - posted
    assert (
        js(
            "const r = document.querySelector('#latest tr[data-device=\"probe-1\"]');"
            "return r && r.classList.contains('critical') && r.cells[1].textContent"
        )
        == "probe-1"
    )  # a device's own reading: no synthetic mark
    origin = server.url
    resources = js("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(origin) for name in resources), resources
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    shot = artifacts / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("SMARTFARM_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
    return seen_after
