"""The report page: index.html holds every figure and table inline and references nothing outside
itself; index.md lists the same; the console summary fits an 80-column terminal; where headless
Chromium is installed, the page renders with every image decoded."""
import re
import shutil
import subprocess

import pytest
from rich.console import Console

from harness.report import write_report
from harness.report.tables import console_summary

from tests.harness.report.conftest import make_run

SCHEDULE = {"name": "official", "provenance": "official-code", "progress": [0.0, 0.5, 1.0],
            "beta_h": [0.2, 0.7, 0.7], "beta_l": [0.8, 0.3, 0.3]}


@pytest.fixture
def report(two_methods, tmp_path):
    make_run(two_methods, "soft-s0", "octave-dcgan", 0, [(0.5, 80.0), (1.0, 70.0)], variant="official",
             schedule=SCHEDULE, precision="bf16")
    return write_report([two_methods], tmp_path / "report", targets=[100.0, 60.0])


def test_html_embeds_every_figure_and_table_and_nothing_external(report):
    page = report.index.read_text()
    figures = sorted(p for p in (report.index.parent / "figures").glob("*.png"))
    assert {p.stem for p in figures} >= {"fid_vs_train_h", "fid_vs_gpu_h", "fid_vs_kwh", "beta_schedules"}
    images = re.findall(r"<img[^>]*src='([^']*)'", page)
    assert len(images) == len(figures) + 5  # every figure and the five runs' final sample grids
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for name in ("summary", "time to target", "runs", "cost", "provenance", "evals"):
        assert f"<h2>{name}</h2>" in page
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//|file:)", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert ">None<" not in page and ">nan<" not in page.lower()
    assert "not reached" in page and "Test CPU 9000" in page and "legacy_tensorflow" in page
    assert "shapes-v1-32-test/train[:64]" in page
    assert "clean-fid &#x27;legacy_tensorflow&#x27; resize, weights test-inception" in page
    assert "not fp32: soft-s0 (bf16)" in page


def test_markdown_lists_the_same(report):
    md = (report.index.parent / "index.md").read_text()
    for p in (report.index.parent / "figures").glob("*.png"):
        assert f"(figures/{p.name})" in md
    assert "## time to target" in md and "| dcgan |" in md
    assert md.count("![samples of") == 5
    linked = re.findall(r"!\[samples of [^\]]*\]\(([^)]*)\)", md)
    assert all((report.index.parent / link).is_file() for link in linked)


def test_beta_schedule_figure_is_drawn_from_run_json(report):
    schedules = report.frames.schedules
    assert len(schedules) == 1 and schedules[0]["provenance"] == "official-code"
    assert schedules[0]["run"] == "soft-s0"


def test_console_summary_fits_80_columns(report):
    console = Console(width=80, record=True)
    console.print(console_summary(report.frames))
    lines = console.export_text().rstrip("\n").split("\n")
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in "".join(lines)
    body = [line for line in lines if line.startswith(("dcgan", "octave"))]
    assert len(body) == 3  # one line per configuration, nothing wrapped
    dcgan = next(line for line in body if line.startswith("dcgan"))
    assert "90.0 n=64" in dcgan and "91.0±1.4" in dcgan  # best with n; final mean ± std over 2 seeds


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="headless Chromium is not installed")
def test_page_renders_in_headless_chromium_with_every_image_decoded(report, tmp_path):
    # Chromium writes the DOM after load; a broken data URI leaves an <img> with naturalWidth 0
    probe = tmp_path / "probe.html"
    page = report.index.read_text().replace(
        "</body>", "<script>window.onload=()=>{const bad=[...document.images].filter(i=>!i.naturalWidth).length;"
                   "document.title='images:'+document.images.length+':broken:'+bad;}</script></body>")
    probe.write_text(page)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>([^<]*)</title>", out.stdout)
    assert title is not None, out.stderr[-2000:]
    n_images = len(re.findall(r"<img", report.index.read_text()))
    assert title.group(1) == f"images:{n_images}:broken:0"


def test_console_summary_heads_with_kid_and_its_interval_when_runs_have_it(tmp_path):
    """The CPU demo's form: KID x 10^3 ± half its bootstrap interval, FID beside it with its n."""
    from harness.report.collect import collect
    from tests.harness.report.conftest import make_run

    root = tmp_path / "runs"
    for name, method, kid in (("a", "dcgan", 0.0123), ("b", "octave-dcgan", 0.0081)):
        run = make_run(root, name, method, 0, [(0.5, 160.0), (1.0, 150.0)], key="fid_standin")
        lines = (run / "metrics.jsonl").read_text().splitlines()
        import json

        last = {**json.loads(lines[-1]), "kid_standin_mean": kid, "kid_standin_low": kid - 0.004,
                "kid_standin_high": kid + 0.002, "kid_standin_n": 64}
        (run / "metrics.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    console = Console(width=80, record=True)
    console.print(console_summary(collect([root])))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text
    assert "KID*" in text and "12.30±3.00" in text and "8.10±3.00" in text and "150.0 n=64" in text
    assert "small-sample" in text and "NOT FID/KID" in text
