"""The report page in a real browser: headless Chromium (where installed) renders index.html at a
fixed width with every expandable section open, and nothing on it is wider than the page (wide
tables scroll inside their box), and every image decodes.

The page itself has no script: the probe is a copy with one added, which writes what it measured
into the title for `--dump-dom` to print."""
import html
import json
import re
import shutil
import subprocess

import pytest

from harness.report import write_report
from harness.rundir.rundir import RunDir

from tests.harness.report.conftest import make_run

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
WIDTH = 1024

# every <details> opened, then each element's box against the viewport; what sits inside a box that
# scrolls may be as wide as it likes, the box itself may not
PROBE = """<script>window.onload = () => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const width = document.documentElement.clientWidth, wide = [];
  for (const e of document.body.querySelectorAll('*')) {
    const box = e.parentElement.closest('.scroll');
    if (box && getComputedStyle(box).overflowX !== 'visible') continue;
    const r = e.getBoundingClientRect();
    if (r.width && (r.right > width + 0.5 || r.left < -0.5))
      wide.push(e.tagName.toLowerCase() + '.' + e.className + ':' + Math.round(r.right));
  }
  const boxes = [...document.querySelectorAll('.scroll')];
  document.title = JSON.stringify({
    width, page: document.documentElement.scrollWidth, wide: wide.slice(0, 20),
    scrolling: boxes.filter(b => b.scrollWidth > b.clientWidth).length, tables: boxes.length,
    images: document.images.length, broken: [...document.images].filter(i => !i.naturalWidth).length});
};</script>"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[dict, str]:
    """(what the probe measured at WIDTH px, the page)."""
    if BROWSER is None:
        pytest.skip("headless Chromium is not installed (chromium, chromium-browser or google-chrome)")
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "runs"
    make_run(root, "dcgan-s0", "dcgan", 0, [(0.25, 150.0), (0.5, 100.0), (1.0, 90.0)])
    make_run(root, "dcgan-s1", "dcgan", 1, [(0.25, 140.0), (0.5, 120.0), (1.0, 92.0)])
    oct_run = make_run(root, "octave-dcgan-combi-with-a-long-name-s0", "octave-dcgan", 0,
                       [(0.25, 100.0), (0.5, 70.0), (1.0, 60.0)], variant="combi")
    # a flag, the longest cell the summary has
    RunDir.open(oct_run).update(exclusive_share={"gan": {"device": "cuda", "seconds": 3600.0, "share": 0.41,
                                                         "min_share": 0.2}})
    report = write_report([root], tmp / "report", targets=[120.0, 100.0, 60.0])
    probe = tmp / "probe.html"
    page = report.index.read_text()
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    out = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},900",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>([^<]*)</title>", out.stdout)
    assert title is not None and title.group(1).startswith("{"), out.stderr[-2000:]
    return json.loads(html.unescape(title.group(1))), page


def test_nothing_on_the_page_is_wider_than_the_page(rendered):
    measured, _ = rendered
    assert measured["width"] == pytest.approx(WIDTH, abs=20)  # the window's width, less a scroll bar
    assert measured["page"] <= measured["width"], measured
    assert measured["wide"] == [], measured
    # the full tables (19 columns of runs and more) are wider than the page: they scroll inside their box
    assert measured["scrolling"] >= 1 and measured["tables"] >= 5


def test_every_image_decodes(rendered):
    measured, page = rendered
    assert measured["images"] == len(re.findall(r"<img", page)) and measured["broken"] == 0
