"""The web demo in a real browser (headless Chromium through Selenium): load the page, upload a photo into the
first tab, wait for the decoded image, move the slider. Used by the slow suite, and to take the front page's
screenshot of a running demo:

    python -m tests.demo_browser http://127.0.0.1:7860/ PHOTO docs/demo.png [SLIDER, 1.0 by default]

Needs Debian's `chromium` and `chromium-driver` and `pip install selenium`.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "Chromium and its driver are not installed (apt-get install chromium chromium-driver)"
    return None


def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait(condition, seconds: float = 60, what: str = "the page"):
    """The first true value of `condition()` within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not appear within {seconds} s")


def served_images(driver) -> list[str]:
    """The sources of the images the server made for the page (uploads, crops, decodes), in page order."""
    from selenium.webdriver.common.by import By

    sources = (img.get_attribute("src") or "" for img in driver.find_elements(By.TAG_NAME, "img"))
    return [src for src in sources if "/gradio_api/file=" in src]


def turn_into_a_dog(driver, url: str, photo: Path) -> tuple[str, str]:
    """Uploads `photo` in the first tab, waits for its crop and decode, then moves the slider to its start and
    waits for the new decode: (the first decode's source, the moved one's)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    upload = wait(lambda: driver.find_elements(By.CSS_SELECTOR, "input[type=file]"), what="the upload field")[0]
    upload.send_keys(str(Path(photo).resolve()))
    first = wait(lambda: (found := served_images(driver)) and len(found) >= 3 and found, what="the decoded image")
    slider = driver.find_element(By.CSS_SELECTOR, "input[type=range]")
    slider.send_keys(Keys.HOME)
    moved = wait(lambda: (found := served_images(driver)) and found[2] != first[2] and found, what="the new decode")
    return first[2], moved[2]


def main() -> None:
    url, photo, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    slider_value = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = chromium()
    try:
        turn_into_a_dog(driver, url, photo)
        slider = driver.find_element(By.CSS_SELECTOR, "input[type=range]")
        slider.send_keys(*[Keys.ARROW_RIGHT] * round(100 * slider_value))  # 1: the mean dog; steps of 0.01
        time.sleep(2)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
