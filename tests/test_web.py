"""The web page of `ksent serve`, in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, which .ci/run installs) driven by Selenium, against a real server subprocess
on a tiny bundle. What the page shows is checked against `ksent predict --json --explain`.

Screenshots of each state are saved under test-output/web/ (git-ignored; KSENT_TEST_OUTPUT moves it).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest

from tests.helpers import REPO, ServerProcess, chromium, cli_predict_json

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

MAX_TEXTS = 5                   # small, so that a file takes several requests and 6 lines are too many
WAIT_S = 30
SHOTS = Path(os.environ.get("KSENT_TEST_OUTPUT", REPO / "test-output")) / "web"
REVIEWS = ["정말 재밌어요 최고의 영화", "시간 아깝다 보지 마세요 지루해요"]


# the served bundle's corpus, "tiny", as the server finds it declared: its text column is "reviews"
TINY = """text = "reviews"
format = { type = "csv" }
[label]
column = "target"
positive = [1]
negative = [0]
[[files]]
name = "reviews.csv"
"""


@pytest.fixture(scope="module")
def server(word_bundle, tmp_path_factory):
    declarations = tmp_path_factory.mktemp("declarations")
    (declarations / "tiny.toml").write_text(TINY, encoding="utf-8")
    srv = ServerProcess(word_bundle, "--max-texts", str(MAX_TEXTS), env={"KSENT_CORPORA": str(declarations)})
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def browser():
    try:
        driver = chromium()
    except RuntimeError as exc:         # a failure that says what to install, not a skip
        pytest.fail(str(exc))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, server):
    """The page, freshly loaded at 1,440 px, once its model panel has been filled from the API."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1440, 1000)
    browser.get(server.url + "/")
    WebDriverWait(browser, WAIT_S).until(lambda d: "Name" in d.find_element("id", "model").text)
    return browser


def wait(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message)


def screenshot(driver, name: str, width: int = 1440) -> Path:
    """The whole page at this width (the window grows to the page's height), as test-output/web/<name>.png."""
    driver.set_window_size(width, 800)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height + 140, 600), 6000))    # + the window's own frame
    path = SHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    return path


def visible_message(driver, element_id: str) -> str:
    return wait(driver, lambda d: d.find_element("id", element_id).is_displayed()
                and d.find_element("id", element_id).text, f"no message in #{element_id}")


# --- classify and explain -----------------------------------------------------------------------

def test_page_shows_verdicts_tokens_and_chart_as_the_cli(page, word_bundle):
    from selenium.webdriver.common.keys import Keys

    expected = cli_predict_json(word_bundle, REVIEWS, "--explain")
    assert page.find_element("id", "explain").is_selected()            # explanations are on by default
    box = page.find_element("id", "reviews")
    box.click()
    box.send_keys("\n".join(REVIEWS))
    box.send_keys(Keys.CONTROL, Keys.ENTER)                              # the keyboard shortcut submits
    results = wait(page, lambda d: len(found := d.find_elements("css selector", "#results > li")) == 2 and found,
                   "no results")

    for item, record in zip(results, expected, strict=True):
        verdict = item.find_element("css selector", ".verdict")
        assert verdict.text == ("긍정" if record["sentiment"] == "positive" else "부정")
        assert f"P(긍정) {record['probability']:.4f}" in item.find_element("css selector", ".probability").text
        width = item.find_element("css selector", ".bar > span").get_attribute("style")
        # the page writes one decimal ("18.0%"); the browser may give the style back normalized ("18%")
        assert float(re.fullmatch(r"width: ([\d.]+)%;", width.strip()).group(1)) == pytest.approx(
            record["probability"] * 100, abs=0.05)
        tokens = item.find_elements("css selector", ".token")
        explained = record["explanation"]["tokens"]
        assert [t.text for t in tokens] == [t["token"] for t in explained]
        for span, t in zip(tokens, explained, strict=True):
            assert float(span.get_attribute("data-effect-logit")) == pytest.approx(t["effect_logit"], abs=1e-4)
            colour = span.value_of_css_property("background-color")            # green pushes to 긍정, red to 부정
            assert colour.startswith("rgba(31, 122, 77" if t["effect_logit"] >= 0 else "rgba(179, 38, 30"), colour
            assert f"after reading it {t['prefix']:.4f}" in span.get_attribute("title")
            assert span.get_attribute("tabindex") == "0"                      # the numbers on focus, too
        chart = item.find_element("css selector", "svg.chart")
        points = chart.find_element("css selector", "polyline").get_attribute("points").split()
        assert len(points) == len(explained) + 1                             # the start, then one per token
        label = chart.get_attribute("aria-label")
        assert label.endswith(", ".join(f"{p:.2f}" for p in
                                        [record["explanation"]["start"], *(t["prefix"] for t in explained)]))
    assert page.find_element("id", "legend").is_displayed()
    assert not page.find_element("id", "message").is_displayed()

    # the model panel: what GET /v1/models/<name> says, with the test confusion matrix
    metrics = json.loads((word_bundle / "metrics.json").read_text(encoding="utf-8"))
    panel = page.find_element("id", "model").text
    assert "tiny-word" in panel and "tiny" in panel and f"{metrics['accuracy']:.4f}" in panel
    balanced = f"{metrics['balanced_accuracy']:.4f} (recall: 부정 {metrics['recall_negative']:.4f}"
    assert f"Balanced accuracy\n{balanced}" in panel
    assert f"긍정 when P(긍정) ≥ {metrics['threshold']:g}" in panel
    assert page.find_element("id", "cm-tp").text == f"{metrics['confusion_matrix']['tp']:,}"

    # everything came from the server: no CDN, no web font
    origins = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert origins and all(url.startswith(page.current_url.rstrip("/")) for url in origins), origins
    screenshot(page, "classified-1440")

    # readable on a phone: nothing wider than a 360 px window
    page.set_window_size(360, 800)
    overflow = page.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1
    screenshot(page, "classified-360", width=360)


# --- errors ---------------------------------------------------------------------------------------

def test_empty_input_and_too_many_texts_show_a_message(page):
    page.find_element("id", "reviews").send_keys(REVIEWS[0])
    page.find_element("id", "classify").click()
    wait(page, lambda d: d.find_elements("css selector", "#results > li"), "no result")
    page.find_element("id", "reviews").clear()
    page.find_element("id", "classify").click()
    assert "at least one review" in visible_message(page, "message")
    assert page.find_elements("css selector", "#results > li") == []    # no stale result under the message
    screenshot(page, "error-empty")

    page.find_element("id", "explain").click()                          # off: the server's max-texts refuses
    page.find_element("id", "reviews").send_keys("\n".join(f"리뷰 {i} 재밌어요" for i in range(MAX_TEXTS + 1)))
    page.find_element("id", "classify").click()
    message = wait(page, lambda d: "Could not classify" in d.find_element("id", "message").text
                   and d.find_element("id", "message").text, "no error message")
    assert str(MAX_TEXTS) in message and "texts" in message
    assert page.find_element("tag name", "h1").is_displayed()           # the page is still there
    screenshot(page, "error-too-many")


# --- files ----------------------------------------------------------------------------------------

def _download(driver) -> str:
    link = wait(driver, lambda d: d.find_element("id", "download").is_displayed()
                and d.find_element("id", "download"), "no download link")
    data = driver.execute_async_script(        # the bytes: fetch's text() would drop the byte-order mark
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b))),"
        " e => done(String(e)));", link.get_attribute("href"))
    assert isinstance(data, list), data
    return bytes(data).decode("utf-8")


def test_a_csv_file_is_classified_in_several_requests_and_offered_as_csv(page, word_bundle, tmp_path):
    texts = ["정말 재밌어요", "시간 아깝다, 보지 마세요", 'a "quoted" 리뷰', "여러 줄\n리뷰 최고의 영화", "",
             "지루해요", "강력 추천", "최악이다", "감동적이다 ^^", "🙂"]           # 10 > MAX_TEXTS: two requests
    source = io.StringIO()
    writer = csv.writer(source)
    writer.writerow(["id", "reviews", "target"])               # the shopping sample's layout: reviews not first
    writer.writerows([i, text, 1] for i, text in enumerate(texts))
    path = tmp_path / "reviews.csv"
    path.write_text(source.getvalue(), encoding="utf-8")

    page.find_element("id", "file").send_keys(str(path))
    page.find_element("id", "classify-file").click()
    content = _download(page)
    assert content.startswith("\ufeff")                                  # so that spreadsheets read UTF-8
    rows = list(csv.DictReader(io.StringIO(content[1:])))
    expected = cli_predict_json(word_bundle, texts)
    assert [r["text"] for r in rows] == texts
    assert [r["sentiment"] for r in rows] == [e["sentiment"] for e in expected]
    assert [float(r["probability"]) for r in rows] == pytest.approx([e["probability"] for e in expected], abs=1e-6)
    assert [r["unknown"] for r in rows] == [str(e["unknown"]).lower() for e in expected]
    assert "10 reviews classified" in visible_message(page, "file-message")
    assert "(column “reviews”)" in page.find_element("id", "file-message").text     # the declared text column
    screenshot(page, "file-classified")


def test_a_csv_without_the_declared_column_asks_which_column_holds_the_reviews(page, word_bundle, tmp_path):
    from selenium.webdriver.support.ui import Select

    texts = ["정말 재밌어요", "지루해요", "강력 추천"]
    path = tmp_path / "export.csv"
    path.write_text("id,document,label\n" + "".join(f"{i},{t},1\n" for i, t in enumerate(texts)), encoding="utf-8")
    page.find_element("id", "file").send_keys(str(path))
    page.find_element("id", "classify-file").click()
    message = visible_message(page, "file-message")
    assert "Which column of export.csv holds the reviews (the model's corpus names it “reviews”)?" in message
    picker = Select(page.find_element("id", "column"))
    assert [o.text for o in picker.options] == ["choose the column…", "id", "document", "label"]
    assert picker.first_selected_option.text == "choose the column…"      # nothing chosen for the user
    assert not page.find_element("id", "download").is_displayed()        # and nothing classified
    screenshot(page, "file-asks-for-column")
    picker.select_by_visible_text("document")
    page.find_element("id", "classify-file").click()
    rows = list(csv.DictReader(io.StringIO(_download(page)[1:])))
    assert [r["text"] for r in rows] == texts
    assert "(column “document”)" in page.find_element("id", "file-message").text


def test_a_review_with_no_known_token_says_so_once(page):
    page.find_element("id", "reviews").send_keys("뷁뷁 궳궳")
    page.find_element("id", "classify").click()
    item = wait(page, lambda d: (found := d.find_elements("css selector", "#results > li")) and found[0], "no result")
    captions = [c.text for c in item.find_elements("css selector", ".chart-caption")]
    assert captions.count("No token the model knows: its answer says nothing about this review.") == 1
    assert not [c for c in captions if "empty review" in c]


def test_a_text_file_is_one_review_per_line(page, word_bundle, tmp_path):
    texts = [f"{word} 영화" for word in ("최고의", "지루한", "감동적인", "최악의", "재밌는", "아까운", "그냥")]
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    page.find_element("id", "file").send_keys(str(path))
    page.find_element("id", "classify-file").click()
    rows = list(csv.DictReader(io.StringIO(_download(page)[1:])))
    expected = cli_predict_json(word_bundle, texts)
    assert [(r["text"], r["label"]) for r in rows] == [(e["text"], str(e["label"])) for e in expected]
    assert page.find_element("id", "download").get_attribute("download") == "reviews-ksent.csv"


def test_a_file_without_reviews_shows_a_message(page, tmp_path):
    page.find_element("id", "classify-file").click()
    assert "Choose a .txt or .csv file" in visible_message(page, "file-message")
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    page.find_element("id", "file").send_keys(str(path))
    page.find_element("id", "classify-file").click()
    assert "holds no reviews" in wait(page, lambda d: "holds no" in d.find_element("id", "file-message").text
                                      and d.find_element("id", "file-message").text, "no message")
    assert not page.find_element("id", "download").is_displayed()


# --- the API docs, offline ------------------------------------------------------------------------

def test_api_docs_render_their_operations_from_local_assets(browser, server):
    browser.set_window_size(1440, 1000)
    browser.get(server.url + "/docs")
    paths = wait(browser, lambda d: [e.text for e in d.find_elements("css selector", ".opblock-summary-path")],
                 "Swagger UI shows no operations")
    assert "/predict" in paths and "/health" in paths and "/" not in paths
    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith(server.url) for url in origins), origins
    screenshot(browser, "api-docs")

    browser.get(server.url + "/redoc")
    wait(browser, lambda d: "/predict" in d.find_element("tag name", "body").text, "ReDoc shows no operations")


def test_a_file_that_is_not_utf8_is_refused_and_formula_cells_are_neutralised(page, tmp_path):
    cp949 = tmp_path / "cp949.csv"
    cp949.write_bytes("reviews\n정말 재밌어요\n지루해요\n".encode("cp949"))
    page.find_element("id", "file").send_keys(str(cp949))
    page.find_element("id", "classify-file").click()
    message = visible_message(page, "file-message")
    assert "cp949.csv is not UTF-8 text (line 2, byte 8;" in message and "iconv -f CP949 -t UTF-8" in message
    assert not page.find_element("id", "download").is_displayed()
    formulas = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2", "@SUM(A1)", "=cmd|' /C calc'!A0", "좋아요"]
    path = tmp_path / "formulas.csv"
    path.write_text("reviews\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}"\n' for t in formulas),
                    encoding="utf-8")
    page.find_element("id", "file").send_keys(str(path))
    page.find_element("id", "classify-file").click()
    rows = list(csv.DictReader(io.StringIO(_download(page)[1:])))
    assert [r["text"] for r in rows] == ["'" + t for t in formulas[:-1]] + ["좋아요"]


def test_a_stray_quote_in_an_upload_is_refused_naming_its_line(page, tmp_path):
    lines = [f"{i},리뷰 {i} 좋아요" for i in range(1, 3001)]
    lines[1] = '99999,"broken quote here'
    path = tmp_path / "stray.csv"
    path.write_text("id,reviews\n" + "\n".join(lines) + "\n", encoding="utf-8")
    page.find_element("id", "file").send_keys(str(path))
    page.find_element("id", "classify-file").click()
    message = visible_message(page, "file-message")
    assert "line 3: a quoted field opens here and does not close within 500 lines" in message
    assert not page.find_element("id", "download").is_displayed()
