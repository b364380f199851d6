"""The app in a real browser: Playwright (the Python package, no browser download) driving
Debian's chromium (`apt-get install chromium`, done by scripts/install-test-deps.sh) against
`python app.py` on 127.0.0.1. Clicks through Generate, Infill with an upload (track choice,
bar range picked by clicking the piano roll; a 6/8 jig in its own bars), a bad upload, and
Learn; saves screenshots under the test's tmp_path. With SYMDIFF_README_SCREENSHOT=1 the
Generate screenshot is also written to assets/screenshot_generate.png (the README's)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_server import REPO

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
MIDI = REPO / "tests" / "data" / "midi"
ALOHA = MIDI / "liliuokalani_aloha_oe_voice_piano.mid"
TIMEOUT_MS = 120_000
pytestmark = pytest.mark.browser  # a tier of its own (conftest skips importing it outside that tier)

if not CHROMIUM.is_file():
    pytest.skip(f"no chromium at {CHROMIUM}: it could not be installed here "
                "(scripts/install-test-deps.sh runs apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    expect(page.locator("#generate-button")).to_be_visible()
    yield page
    context.close()


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def test_generate(page, server, tmp_path):
    page.locator("#generate-button").click()
    expect(page.locator("#generate-status")).to_contain_text("Done in", timeout=TIMEOUT_MS)
    assert "64 bars" in text_of(page, "#generate-status")
    expect(page.locator("#generate-roll img")).to_be_visible()
    expect(page.locator("#generate-stages img")).to_be_visible()
    # the live plots drew their lines (vega marks with a path)
    for plot in ("#generate-cv", "#generate-settled"):
        expect(page.locator(f"{plot} canvas, {plot} svg").first).to_be_visible()
    expect(page.locator("#generate-midi a[href*='symdiff_64bars_seed0.mid']").first).to_be_attached()
    expect(page.locator("#generate-audio audio, #generate-audio [data-testid*='waveform']").first).to_be_attached()
    page.wait_for_timeout(1500)  # let the plots finish drawing
    shot = tmp_path / "generate.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("SYMDIFF_README_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "assets" / "screenshot_generate.png")
    assert server.alive


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)])
def test_first_ten_seconds(browser, server, tmp_path, width, height):
    """Issue 27: on a laptop and on a phone, Generate is above the fold, and before any click the
    page shows an example result (a piano roll, its audio and MIDI), not empty boxes."""
    context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=width < 600)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    expect(page.locator("#generate-button")).to_be_visible()
    assert page.locator("#generate-button").bounding_box()["y"] + 40 <= height  # above the fold
    expect(page.locator("#generate-status")).to_contain_text("An example")
    expect(page.locator("#generate-roll img")).to_be_visible()
    expect(page.locator("#generate-midi a[href*='symdiff_example_16bars_seed0.mid']").first).to_be_attached()
    # the figures drawn for the page: 1000 px on a laptop; on a phone the page's width, shown 1:1
    # (labels at their size), and nothing scrolls sideways
    page.wait_for_timeout(1500)
    phone = width < 600
    tabs = (("generate", "Generate", "#generate-roll img"), ("infill", "Infill", "#infill-preview img"),
            ("vary", "Vary", "#vary-preview img"), ("learn", "Learn", "#learn-noise-roll img"),
            ("curve", "Learn", "#learn-curve img"))
    for tab, name, img in tabs:
        page.get_by_role("tab", name=name).click()
        page.locator(img).scroll_into_view_if_needed()
        expect(page.locator(img)).to_be_visible()
        if phone:  # the redrawn picture replaces the one drawn at start
            page.wait_for_function(f"document.querySelector('{img}').naturalWidth < {width}")
        drawn = page.locator(img).evaluate("i => i.naturalWidth")
        shown = page.locator(img).bounding_box()["width"]
        if phone:
            assert 300 <= drawn < width - 50 and abs(shown - drawn) <= 0.05 * drawn, (tab, drawn, shown)
        else:
            assert drawn == 1000, (tab, drawn)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(tmp_path / f"first_{tab}_{width}x{height}.png"), full_page=tab == "generate")
    if phone:  # a run's own pictures too
        page.get_by_role("tab", name="Generate").click()
        page.locator("#generate-button").click()
        expect(page.locator("#generate-status")).to_contain_text("Done in", timeout=TIMEOUT_MS)
        for img in ("#generate-roll img", "#generate-stages img"):
            page.locator(img).scroll_into_view_if_needed()
            page.wait_for_function(f"document.querySelector('{img}').naturalWidth >= 300")
            assert page.locator(img).evaluate("i => i.naturalWidth") < width - 50
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(tmp_path / f"generated_{width}x{height}.png"), full_page=True)
    context.close()


def test_infill_and_vary_open_on_an_example(page, server, tmp_path):
    """Issue 27: the Infill and Vary tabs open on an example song, its range picked and drawn, so
    one click runs them; nothing is empty before a run."""
    for tab, name in (("infill", "Infill"), ("vary", "Vary")):
        page.get_by_role("tab", name=name).click()
        expect(page.locator(f"#{tab}-file")).to_contain_text("liliuokalani_aloha_oe_voice_piano")
        expect(page.locator(f"#{tab}-range")).to_contain_text("20 bars of 4/4")
        expect(page.locator(f"#{tab}-preview img")).to_be_visible()
        expect(page.locator(f"#{tab}-status")).to_contain_text("An example is loaded")
        page.screenshot(path=str(tmp_path / f"{tab}_opening.png"), full_page=True)
    expect(page.locator("#vary-range")).to_contain_text("Bars 1-")


def run_then_stop(page, tab: str, running: str) -> None:
    """Start `tab`'s run at 1000 steps and press Stop once its status says `running`; it must then
    say that it stopped, and at which step."""
    box = page.locator(f"#{tab}-steps input[type=number]")
    box.fill("1000")
    box.press("Enter")
    page.locator(f"#{tab}-button").click()
    expect(page.locator(f"#{tab}-status")).to_contain_text(running, timeout=TIMEOUT_MS)
    page.locator(f"#{tab}-stop").click()
    expect(page.locator(f"#{tab}-status")).to_contain_text("Stopped at step", timeout=TIMEOUT_MS)


def test_stop_says_where_it_stopped(page, server, tmp_path):
    """Issue 27: Stop says that the run stopped, at which step, and shows the partial result."""
    page.locator("#generate-settings").get_by_text("Settings").click()
    run_then_stop(page, "generate", "Sampling: step")
    assert "of 1000" in text_of(page, "#generate-status")
    expect(page.locator("#generate-roll img")).to_be_visible()  # the partial result
    page.screenshot(path=str(tmp_path / "stopped.png"), full_page=True)
    assert server.alive


def test_vary_stops_and_says_so(page, server, tmp_path):
    """Issue 27: Stop in the Vary tab says at which step of the job it stopped, and that nothing
    was written."""
    page.get_by_role("tab", name="Vary").click()
    upload(page, "vary", MIDI / "oneills_020_jig_6-8.mid")
    expect(page.locator("#vary-range")).to_contain_text("16 bars of 6/8")
    run_then_stop(page, "vary", "Varying:")
    assert "no variations written" in text_of(page, "#vary-status")
    page.screenshot(path=str(tmp_path / "vary_stopped.png"), full_page=True)
    assert server.alive


def upload(page, tab: str, path) -> None:
    """Upload a file to a tab as a user does: the example the tab opens with cleared (x) first."""
    loaded = page.locator(f"#{tab}-file").get_by_role("button", name="Clear")
    if loaded.count():
        loaded.click()
    page.set_input_files(f"#{tab}-file input[type=file]", str(path))


def x_on_roll(img, bar: float, bars: float) -> float:
    """Where the middle of a bar lies on the preview (its plot area: 58 px .. 1000 - 14 px of 1000),
    for a roll of `bars` equal bars."""
    box = img.bounding_box()
    left, right = 58 / 1000 * box["width"], (1 - 14 / 1000) * box["width"]
    return left + (bar - 0.5) / bars * (right - left)


def click_bars(page, first: int, last: int, bars: float) -> None:
    """Pick a range by clicking the preview twice, as a user does."""
    img = page.locator("#infill-preview img")
    for bar, box in ((first, "#infill-first input"), (last, "#infill-last input")):
        img.click(position={"x": x_on_roll(img, bar, bars), "y": img.bounding_box()["height"] / 2})
        expect(page.locator(box)).to_have_value(str(bar))
        expect(page.locator("#infill-range")).to_contain_text(f"Bars {first}-")  # the new preview is in
        page.wait_for_timeout(500)


def test_infill_with_an_upload(page, server, tmp_path):
    page.get_by_role("tab", name="Infill").click()
    upload(page, "infill", ALOHA)
    expect(page.locator("#infill-range")).to_contain_text("Bars 9-16")  # the default range
    # choose the solo voice (track 4, it sings to bar 12 of the file's 20)
    page.locator("#infill-track input").click()
    page.get_by_role("option", name="4: Solo Voice").click()
    expect(page.locator("#infill-preview")).to_be_visible()
    expect(page.locator("#infill-range")).to_contain_text("20 bars of 4/4")
    page.wait_for_timeout(1000)
    click_bars(page, 4, 7, 20)  # exactly these bars: no snapping to the model's 2-bar chunks
    expect(page.locator("#infill-range")).to_contain_text("Bars 4-7")
    page.screenshot(path=str(tmp_path / "infill_range.png"), full_page=True)
    page.locator("#infill-button").click()
    expect(page.locator("#infill-status")).to_contain_text("Done in", timeout=TIMEOUT_MS)
    assert "Track 4, bars 4-7 regenerated" in text_of(page, "#infill-status")
    expect(page.locator("#infill-rows img")).to_be_visible()
    expect(page.locator("#infill-midi a[href*='infilled_bars4-7_seed0.mid']").first).to_be_attached()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "infill.png"), full_page=True)
    assert (tmp_path / "infill.png").stat().st_size > 50_000 and server.alive


def test_a_jig_in_its_own_meter(page, server, tmp_path):
    """Issue 12: a 6/8 jig's bars are the score's (16, not the 12 of a 4/4 grid), and a click
    on its roll picks the bar under the pointer."""
    page.get_by_role("tab", name="Infill").click()
    upload(page, "infill", MIDI / "oneills_020_jig_6-8.mid")
    expect(page.locator("#infill-range")).to_contain_text("16 bars of 6/8")
    expect(page.locator("#infill-range")).to_contain_text("Bars 9-16")
    page.wait_for_timeout(1000)
    click_bars(page, 5, 8, 16)
    expect(page.locator("#infill-range")).to_contain_text("Bars 5-8")
    page.locator("#infill-button").click()
    expect(page.locator("#infill-status")).to_contain_text("Done in", timeout=TIMEOUT_MS)
    status = text_of(page, "#infill-status")
    assert "Track 0, bars 5-8 regenerated" in status and "chords" not in status  # a line: 1 of 69 notes shares a 16th
    expect(page.locator("#infill-midi a[href*='infilled_bars5-8_seed0.mid']").first).to_be_attached()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "infill_jig.png"), full_page=True)
    assert server.alive


def test_bad_upload_shows_a_message(page, server, tmp_path):
    page.get_by_role("tab", name="Infill").click()
    upload(page, "infill", MIDI / "bad" / "not_midi.mid")
    expect(page.get_by_text("not_midi.mid: not a MIDI file (no MThd header)").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "bad_upload.png"), full_page=True)
    assert "Traceback" not in page.content()
    # the app still works: a good file afterwards
    upload(page, "infill", ALOHA)
    expect(page.locator("#infill-range")).to_contain_text("regenerated")
    assert server.alive


def test_learn(page, server, tmp_path):
    page.get_by_role("tab", name="Learn").click()
    expect(page.locator("#learn-caption")).to_contain_text("Step 300 of 1000")
    expect(page.locator("#learn-caption")).to_contain_text("still sound as in the melody (step 0: ")
    expect(page.locator("#learn-noise-roll img")).to_be_visible()
    expect(page.locator("#learn-curve img")).to_be_visible()  # the committed restoration curve
    page.locator("#learn-run").click()
    expect(page.locator("#learn-step-caption")).to_contain_text("Start (step 1000)")
    expect(page.locator("#learn-film img")).to_be_visible()
    # step to the end of the run through the slider's number box
    box = page.locator("#learn-step input[type=number]")
    box.fill("20")
    box.press("Enter")
    box.blur()
    expect(page.locator("#learn-step-caption")).to_contain_text("Done", timeout=TIMEOUT_MS)
    expect(page.locator("#learn-step-caption")).to_contain_text("a new melody")
    page.screenshot(path=str(tmp_path / "learn.png"), full_page=True)
    # a restoring run: from step 20 the end keeps what the VAE keeps (issue 27)
    start = page.locator("#learn-start input[type=number]")
    start.fill("20")
    start.press("Enter")
    page.locator("#learn-run").click()
    expect(page.locator("#learn-step-caption")).to_contain_text("Start (step 20)")
    page.locator("#learn-play").click()
    expect(page.locator("#learn-step-caption")).to_contain_text("the VAE's own reconstruction: ", timeout=TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "learn_restore.png"), full_page=True)
    assert server.alive
