"""``index.html`` in a real browser (headless Debian chromium): the results wrap in a grid, no horizontal
scrollbar at 1280 px, class names shown, and the screenshot has each border's colour where the DOM puts it."""
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from metric_retrieval.retrieval.visualize import BORDER, COLORS, write_html

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 1400
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                                reason="needs Debian chromium and chromedriver in /usr/bin")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}",
         "--force-device-scale-factor=1"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("html")
    paths = []
    for i in range(9):  # a query and 8 results, plain grey pictures: the borders carry the colours
        paths.append(folder / f"img_{i}.png")
        Image.new("RGB", (60, 40), (90 + 10 * i,) * 3).save(paths[-1])
    correct = [True, False, True, True, False, None, True, False]
    classes = [f"class_{i:03d}" for i in range(12, 20)]
    out = write_html(paths[0], paths[1:], [0.1 * i for i in range(1, 9)], correct, folder / "index.html",
                     query_class="class_012", classes=classes)
    return Path(out), correct, classes


@pytest.fixture(scope="module")
def layout(page):
    """Each figure's box and caption as the browser lays them out, plus the page's scroll width."""
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        driver.set_window_size(WIDTH, HEIGHT)
        driver.get(page[0].as_uri())
        figures = driver.execute_script(
            "return [...document.querySelectorAll('figure')].map(f => {const r = f.querySelector('img')"
            ".getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height, text: f.innerText}})")
        scroll = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    finally:
        driver.quit()
    return figures, scroll


def test_results_wrap_in_a_grid_without_horizontal_scrolling(layout):
    figures, (scroll_width, inner_width) = layout
    assert len(figures) == 9
    assert scroll_width <= inner_width
    assert all(f["x"] + f["w"] <= inner_width for f in figures)
    rows = sorted({round(f["y"]) for f in figures})
    per_row = [sum(round(f["y"]) == y for f in figures) for y in rows]
    assert len(rows) == 2 and per_row[0] == 5 and sum(per_row) == 9, per_row  # 5 tiles of 224 + gaps fit 1280 px


def test_captions_name_the_classes(layout, page):
    figures, _ = layout
    _, _, classes = page
    assert "class_012" in figures[0]["text"] and "query" in figures[0]["text"]
    for figure, name, rank in zip(figures[1:], classes, range(1, 9)):
        assert name in figure["text"] and f"#{rank}" in figure["text"]


def test_screenshot_shows_each_border_where_the_dom_says(layout, page, tmp_path):
    figures, _ = layout
    path, correct, _ = page
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--screenshot={shot}", path.as_uri()], check=True, capture_output=True,
                   timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    for figure, expected in zip(figures, ["query", *correct]):
        x, y = int(figure["x"] + BORDER // 2), int(figure["y"] + figure["h"] // 2)  # middle of the left border
        assert all(abs(a - b) <= 8 for a, b in zip(image.getpixel((x, y)), COLORS[expected])), (figure, expected)

