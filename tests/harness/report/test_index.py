"""The report page: index.html holds every figure and table inline and references nothing outside
itself; a summary of one row per configuration heads it, real images stand beside the generated
ones, the full tables wait behind expandable sections; index.md lists the same in the same order; the
console summary fits an 80-column terminal. (tests/harness/report/test_report_browser.py renders it.)"""
import html
import json
import re

import pandas as pd
import pytest
from rich.console import Console

from harness.report import write_report
from harness.report.tables import console_summary
from harness.rundir.rundir import RunDir

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
    assert len(images) == len(figures) + 5 + 1  # every figure, the five runs' final sample grids, the real one
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for name in ("summary", "samples", "figures", "details"):
        assert f"<h2>{name}</h2>" in page
    for name in ("summary, every column", "time to target", "runs", "cost", "provenance"):
        assert f"<details><summary>{name} <span>(" in page  # in full, one click away
    assert "<summary>evals" not in page and "evals: 15 rows in tables/evals.csv" in page  # named, not inlined
    # every figure and every table has a caption
    assert page.count("<figure") == page.count("<figcaption>") == len(images) + page.count("<table")
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
    assert "### time to target" in md and "| dcgan |" in md
    assert md.count("![samples of") == 5 and md.count("![real images of shapes-v1-32-test]") == 1
    linked = re.findall(r"!\[(?:samples|real images) of [^\]]*\]\(([^)]*)\)", md)
    assert len(linked) == 6 and all((report.index.parent / link).is_file() for link in linked)
    # the page's order: the summary first, the full tables last
    heads = [md.index(f"## {name}\n") for name in ("summary", "samples", "figures", "details")]
    assert heads == sorted(heads) and md.index("### summary, every column") > heads[-1]


def _headline(page: str) -> pd.DataFrame:
    """The summary table's cells, as text, by configuration."""
    table = re.search(r"<table[^>]*class=\"[^\"]*headline[^\"]*\">(.*?)</table>", page, re.DOTALL).group(1)
    rows = [[html.unescape(re.sub(r"<[^>]*>", "", cell)).strip()
             for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.DOTALL)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.DOTALL)]
    return pd.DataFrame(rows[1:], columns=rows[0]).set_index("method")


def test_the_summary_heads_the_page_with_one_row_per_configuration(report):
    page = report.index.read_text()
    assert page.index("class=\"dataframe headline\"") < page.index("<h2>samples</h2>")  # the first table
    head = _headline(page)
    assert list(head.columns) == ["seeds", "status", "FID, small-sample", "time to target", "cost per run",
                                  "share of the machine"]
    dcgan = head.loc["dcgan"]
    assert (dcgan["seeds"], dcgan["status"]) == ("2", "budget ×2")
    assert dcgan["FID, small-sample"] == "91.0 ± 1.4 (n=64)"  # mean ± std over the seeds, with its n
    assert dcgan["time to target"] == "≤ 100 in 37m30s (2/2)"  # 0.5 h and 0.75 h
    assert head.loc["octave-dcgan oct", "time to target"] == "≤ 100 in 22m30s (2/2)"
    assert dcgan["cost per run"] == "1 GPU-h, 0.5 kWh" and dcgan["share of the machine"] == "not measured"
    assert "small-sample: biased upwards" in page


def test_the_summary_shows_kid_with_its_interval_and_names_a_stand_in_and_a_flag(tmp_path):
    root = tmp_path / "runs"
    for name, method, kid, share in (("a", "dcgan", 0.0123, 0.98), ("b", "octave-dcgan", 0.0081, 0.5)):
        run = make_run(root, name, method, 0, [(0.5, 160.0), (1.0, 150.0)], key="fid_standin")
        lines = (run / "metrics.jsonl").read_text().splitlines()
        last = {**json.loads(lines[-1]), "kid_standin_mean": kid, "kid_standin_low": kid - 0.004,
                "kid_standin_high": kid + 0.002, "kid_standin_n": 64, "fid_standin_low": 149.0,
                "fid_standin_high": 153.0}
        (run / "metrics.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
        RunDir.open(run).update(exclusive_share={"gan": {"device": "cpu", "seconds": 3600.0, "share": share,
                                                         "min_share": share}})
    report = write_report([root], tmp_path / "out")
    head = _headline(report.index.read_text())
    assert list(head.columns)[2:4] == ["KID ×10³", "FID stand-in, small-sample"]
    assert head.loc["dcgan", "KID ×10³"] == "12.30 ± 3.00"  # one seed: ± half its bootstrap interval
    assert head.loc["dcgan", "FID stand-in, small-sample"] == "150.0 ± 2.0 (n=64)"
    assert head.loc["dcgan", "share of the machine"] == "0.98"
    assert head.loc["octave-dcgan", "share of the machine"].startswith("0.50 ⚑ busy (0.50 of the machine)")
    md = (tmp_path / "out" / "index.md").read_text()
    assert "| dcgan | 1 | budget | 12.30 ± 3.00 | 150.0 ± 2.0 (n=64) |" in md and "NOT FID/KID" in md


def test_runs_without_a_real_grid_say_so_in_one_line(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "old", "dcgan", 0, [(1.0, 90.0)], real=False)  # written before runs kept samples/real.png
    report = write_report([root], tmp_path / "out")
    line = "No grid of real images of shapes-v1-32-test: these runs were written before run directories kept one"
    assert line in report.index.read_text() and line in (tmp_path / "out" / "index.md").read_text()
    figures = list((tmp_path / "out" / "figures").glob("*.png"))
    assert len(re.findall(r"<img", report.index.read_text())) == len(figures) + 1  # the figures and the run's grid


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


def test_a_long_table_shows_its_first_rows_and_names_its_file(report, tmp_path):
    from harness.report.index import INLINE_ROWS, write_index

    jobs = pd.DataFrame({"job": [f"job-{i}" for i in range(INLINE_ROWS + 10)], "exit_code": 0})
    out = tmp_path / "long"
    out.mkdir()
    page, md = (p.read_text() for p in write_index(report.frames, {"jobs": jobs}, [], out))
    assert f"<summary>jobs <span>(the first {INLINE_ROWS} of {INLINE_ROWS + 10} rows x 2 columns" in page
    assert f"job-{INLINE_ROWS - 1}<" in page and f"job-{INLINE_ROWS}<" not in page
    assert f"{INLINE_ROWS + 10} rows: see [tables/jobs.md](tables/jobs.md)." in md


def test_a_large_sample_grid_is_embedded_scaled_and_the_run_keeps_its_own(tmp_path):
    """A 256 px set's 2,056 px grid is embedded at twice the width it is shown at, not megabytes of PNG."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from harness.report.index import SAMPLES_WIDTH, _grid_uri

    grid = tmp_path / "gan-100.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2056, 2056, 3), dtype=np.uint8)).save(grid)
    uri = _grid_uri(grid)
    shown = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert shown.size == (2 * SAMPLES_WIDTH, 2 * SAMPLES_WIDTH)
    assert Image.open(grid).size == (2056, 2056)  # the run's file is left as it was
    small = tmp_path / "small.png"
    Image.new("RGB", (274, 274)).save(small)
    assert base64.b64decode(_grid_uri(small).split(",", 1)[1]) == small.read_bytes()  # small grids as they are
