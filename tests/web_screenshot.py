"""The README's screenshot of the web page: `ksent serve` on a real bundle, two reviews explained.

    .venv/bin/python tests/web_screenshot.py artifacts/nsmc-morpheme-mecab docs/images/ksent-serve.png

Needs Chromium and chromedriver (apt install chromium chromium-driver) and a Korean font
(fonts-noto-cjk); not a pytest test (the name does not start with test_).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import ServerProcess, chromium  # noqa: E402

REVIEWS = ["배우들 연기가 훌륭하고 스토리도 감동적이에요", "재미있을 줄 알았는데 완전 실망했다"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    args = parser.parse_args()

    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium(args.width, 900)
    server = None
    try:
        server = ServerProcess(args.bundle.resolve())
        driver.get(server.url + "/")
        WebDriverWait(driver, 60).until(lambda d: "Name" in d.find_element("id", "model").text)
        driver.find_element("id", "reviews").send_keys("\n".join(REVIEWS))
        driver.find_element("id", "classify").click()
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements("css selector", "#results > li")) == 2)
        # the first panel only: the reviews and their explanations
        panel = driver.find_element("css selector", "main > section")
        height = driver.execute_script("return arguments[0].getBoundingClientRect().bottom", panel)
        driver.set_window_size(args.width, int(height) + 160)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        assert panel.screenshot(str(args.output)), args.output
        print(f"{args.output}: {args.width} px wide, {args.bundle.name}")
    finally:
        driver.quit()
        if server is not None:
            server.kill()


if __name__ == "__main__":
    main()
