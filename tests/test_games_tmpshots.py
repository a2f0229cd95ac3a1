import re
import pytest
from tests.game_factories import make_playable

@pytest.mark.browser
def test_shots(live_settings, transactional_db, browser):
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    page.goto(live_settings.url + "/")
    page.screenshot(path="/tmp/g_empty_home.png", full_page=True)
    make_playable(6)
    page.goto(live_settings.url + "/")
    page.click("#start-game")
    page.wait_for_url(re.compile(r"/play/"))
    for i in range(5):
        page.wait_for_selector(f"#round-title:has-text('Photo {i+1} of 5')")
        box = page.locator("#map").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
        page.click("#guess"); page.wait_for_selector("#your-result")
        page.click("#next")
    page.wait_for_selector("#summary:not([hidden])")
    page.wait_for_timeout(800)
    page.screenshot(path="/tmp/g_phone_summary2.png", full_page=True)
