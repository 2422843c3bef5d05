"""The draw-a-digit page in a real browser: headless Chromium (Debian's package), driven by Playwright."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SAMPLE = ROOT / "samples" / "sample_image.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def server(trained_checkpoint):
    """`python -m digitnet.serve` on a free loopback port (--port 0: the OS picks, the server prints it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitnet.serve", str(trained_checkpoint.parent), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.browser
def test_draw_a_seven_and_upload_a_file(server, tmp_path):
    if CHROMIUM is None and os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
    if CHROMIUM is None:
        pytest.skip("no chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(server)
            page.wait_for_function("document.getElementById('model').dataset.arch === 'baseline'")
            assert "holdout accuracy" in page.inner_text("#model")

            # A 7 with real pointer events: the bar, then the stroke down to the left.
            box = page.locator("#pad").bounding_box()
            x, y = box["x"], box["y"]
            page.mouse.move(x + 70, y + 60)
            page.mouse.down()
            for px, py in [(110, 60), (150, 60), (200, 60), (185, 100), (165, 150), (145, 200), (130, 235)]:
                page.mouse.move(x + px, y + py, steps=6)
            page.mouse.up()
            page.wait_for_function("document.getElementById('digit').dataset.digit !== ''", timeout=20000)
            assert page.inner_text("#digit") == "7"
            bars = page.locator("#bars .bar")
            assert bars.count() == 10
            assert page.locator("#bars .bar.best").get_attribute("data-digit") == "7"
            assert page.get_attribute("#preview", "src").startswith("data:image/png;base64,")
            page.screenshot(path=str(tmp_path / "drawn.png"))

            page.set_input_files("#choose", [str(SAMPLE), str(ROOT / "README.md")])
            page.wait_for_selector("#results tbody tr.error")
            row = page.locator("#results tbody tr.ok")
            assert row.get_attribute("data-file") == "sample_image.png"
            assert row.locator("td").nth(2).inner_text() == "7"
            assert "not an image" in page.locator("#results tbody tr.error").inner_text()
            page.click("#clear")
            assert page.inner_text("#digit") == "–"
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert (tmp_path / "page.png").stat().st_size > 10_000
        finally:
            browser.close()
