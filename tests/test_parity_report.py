"""parity.report: terminal table, progress, JSON round trip, and the HTML/Markdown report.

The runs are synthetic RunResult objects with the shapes real runs have: float64 differences at
rounding level, float32 ones near a measured tolerance, a few failing runs (one 3× over, one that
blew up to inf, one NaN), one crashed run, and runs that match exactly (zeros on a log scale).
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from rich.console import Console

from parity import report
from parity.metric import F64_GATE
from parity.report import plots
from parity.report.results import SCHEMA, RunResult

STEPS = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(
    optimizer,
    config,
    model="mlp",
    dtype="float64",
    *,
    kind="optimizer",
    scale=None,
    seed=0,
    tolerance=None,
    **overrides,
):
    """A judged run whose differences grow like rounding error from ``scale`` per step."""
    rng = np.random.default_rng(seed)
    k = np.arange(STEPS)
    loss = 2.3 * np.exp(-k / (8 + seed % 5)) + 0.05
    if scale is None:
        scale = 2e-16 if dtype == "float64" else 6e-8
    tolerance = tolerance if tolerance is not None else (F64_GATE if dtype == "float64" else 2e-6)
    drift = scale * np.sqrt(k + 1) * (1 + rng.random(STEPS))
    r = RunResult(
        kind=kind,
        optimizer=optimizer,
        config=config,
        model=model,
        dtype=dtype,
        steps=STEPS,
        tolerance=tolerance,
        tolerance_note="float64 gate" if dtype == "float64" else "measured 1.2e-06 after 50 steps",
        loss_torch=loss.tolist(),
        loss_jax=(loss + drift).tolist(),
        loss_reference=(loss + drift / 2).tolist() if kind == "optimizer" else None,
        param_abs=(2 * drift).tolist(),
        param_scaled=drift.tolist(),
        param_rel=(3 * drift).tolist(),
        state_scaled=(1.5 * drift).tolist() if kind == "optimizer" else [],
        state_final=None if kind == "optimizer" else float(1.5 * drift[-1]),
        reference_scaled=float(drift[-1]) if kind == "optimizer" else None,
        seconds=0.1 + 0.01 * seed,
    )
    for name, value in overrides.items():
        setattr(r, name, value)
    return r.judge() if r.error is None else r


def _suite(configs_per_optimizer: int = 4) -> list[RunResult]:
    """Optimizer runs in two dtypes, model runs, and the special cases named in the module doc."""
    runs = []
    seed = 0
    for optimizer in ("adam", "adamw", "sgd", "nadam", "rprop"):
        for c in range(configs_per_optimizer):
            config = "torch_default" if c == 0 else f"torch_option_{c}"
            for dtype in ("float64", "float32"):
                seed += 1
                runs.append(_run(optimizer, config, dtype=dtype, seed=seed))
    for model in ("cnn", "lstm"):
        for optimizer in ("adam", "sgd"):
            seed += 1
            runs.append(
                _run(
                    optimizer, "default", model, "float32", kind="model", seed=seed, tolerance=1e-5
                )
            )
    runs += [
        # 3x over its tolerance after step 17 (the parameters drift, then partly recover).
        _run(
            "adamw",
            "amsgrad",
            dtype="float32",
            seed=seed + 1,
            param_scaled=[
                6e-6 * min(k, 17) / 17 * (1 if k <= 17 else 0.8) for k in range(1, STEPS + 1)
            ],
        ),
        # Blew up: the last steps are inf.
        _run(
            "nadam",
            "blowup",
            dtype="float32",
            seed=seed + 2,
            param_scaled=[1e-7] * (STEPS - 3) + [math.inf] * 3,
        ),
        # NaN in the optimizer state.
        _run(
            "rprop",
            "nan_state",
            dtype="float64",
            seed=seed + 3,
            state_scaled=[0.0] * (STEPS - 1) + [math.nan],
        ),
        # Crashed: no figures.
        RunResult(
            "model",
            "lbfgs",
            "strong_wolfe",
            "cnn",
            "float64",
            STEPS,
            F64_GATE,
            error="RuntimeError: shapes (3, 4) and (5,) not aligned\n  at line 7",
        ),
        # Bitwise equal at tolerance 0 (zeros everywhere): passes.
        _run("sgd", "bitwise", dtype="float32", seed=seed + 4, tolerance=0.0, scale=0.0),
    ]
    return runs


FAILING = {
    "adamw/amsgrad/mlp/float32",
    "nadam/blowup/mlp/float32",
    "rprop/nan_state/mlp/float64",
    "lbfgs/strong_wolfe/cnn/float64",
}


@pytest.fixture(scope="module")
def runs() -> list[RunResult]:
    return _suite()


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory):
    meta = {
        "versions": {"torch": "2.13.0", "jax": "0.10.2"},
        "platform": "Linux-x86_64",
        "seed": 0,
        "date": "2025-01-01T00:00:00",
        "seconds": 12.5,
    }
    html_path, md_path = report.write_report(tmp_path_factory.mktemp("report"), runs, meta)
    return html_path, md_path


def test_synthetic_suite_fails_where_intended(runs):
    assert {r.id for r in runs if not r.passed} == FAILING
    assert all(r.passed for r in runs if r.id not in FAILING)


def test_json_round_trip(runs, tmp_path):
    meta = {"seed": 0, "versions": {"torch": "2.13.0"}, "seconds": math.inf}
    path = report.write_json(tmp_path / "out" / "results.json", runs, meta)
    read_meta, read_runs = report.read_json(path)
    assert read_meta == {"seed": 0, "versions": {"torch": "2.13.0"}, "seconds": "inf"}
    by_id = {r.id: r for r in read_runs}
    assert sorted(by_id) == sorted(r.id for r in runs)
    for r in runs:
        assert by_id[r.id].to_dict() == r.to_dict()  # to_dict writes nan as "nan", so == holds
    blown = by_id["nadam/blowup/mlp/float32"]
    assert blown.param_scaled[-1] == math.inf and blown.worst == math.inf
    assert math.isnan(by_id["rprop/nan_state/mlp/float64"].state_scaled[-1])
    text = path.read_text()
    assert text.count("\n") == len(runs) + 7  # one run per line
    assert '"failed": 3, "errors": 1' in text


def test_read_json_refuses_newer_schema_and_other_files(tmp_path):
    newer = tmp_path / "newer.json"
    newer.write_text(f'{{"schema": {SCHEMA + 1}, "runs": []}}')
    with pytest.raises(ValueError, match="schema"):
        report.read_json(newer)
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a jaxopt-parity results file"):
        report.read_json(other)


def test_failure_lines_name_exactly_the_failing_runs(runs):
    lines = report.failure_lines(runs)
    assert len(lines) == len(FAILING)
    assert {line.split()[1].rstrip(":") for line in lines} == FAILING
    assert (
        lines[0]
        == "ERROR lbfgs/strong_wolfe/cnn/float64: RuntimeError: shapes (3, 4) and (5,) not aligned"
    )
    (amsgrad,) = [line for line in lines if "amsgrad" in line]
    # 6e-6·k/17 first exceeds 2e-6 at step 6; the worst is at step 17
    assert amsgrad == (
        "FAIL adamw/amsgrad/mlp/float32: worst 6.00e-06 > tolerance 2e-06 (missed by 3×); "
        "parameters after step 6 (first past the tolerance; worst 6e-06: parameters after step 17)"
    )
    assert "(difference not finite); parameters after step 28" in next(
        line for line in lines if "blowup" in line
    )
    assert "(NaN)" in next(line for line in lines if "nan_state" in line)


def test_summary_line(runs):
    assert (
        report.summary_line(runs, 3.25)
        == f"{len(runs)} runs: {len(runs) - 4} passed, 3 failed, 1 error in 3.2 s"
    )
    assert report.summary_line(runs[:2], 1.0) == "all 2 runs passed in 1.0 s"


def _table_text(results, **kwargs) -> str:
    console = Console(record=True, width=200)
    report.print_table(results, console, **kwargs)
    return console.export_text()


def _row_of(text: str, r: RunResult) -> str | None:
    pattern = rf"{re.escape(r.optimizer)}\s+│\s+{re.escape(r.config)}\s+│\s+{re.escape(r.model)}\s+│\s+{r.dtype}"
    return next((line for line in text.splitlines() if re.search(pattern, line)), None)


def test_print_table_verbose_has_every_run_and_status(runs):
    text = _table_text(runs, verbose=True)
    for r in runs:
        row = _row_of(text, r)
        assert row is not None, r.id
        assert ("PASS" in row) == r.passed
    assert "ERROR" in _row_of(text, runs[-2])
    assert "3 failed, 1 error" in text


def test_print_table_aggregates_many_runs_but_lists_failures_in_full():
    many = _suite(configs_per_optimizer=30)
    assert len(many) > 300
    text = _table_text(many)
    assert len(text.splitlines()) < 80  # 13 groups + 4 failing rows, not 300 rows
    assert "30 configs (worst:" in text
    assert "FAIL 1/31" in text  # adamw float32: 30 configs + amsgrad
    assert "4 runs that did not pass" in text
    failures = text.split("4 runs that did not pass")[1]
    for r in many:
        if not r.passed:
            assert _row_of(failures, r) is not None, r.id


def test_progress_in_a_log_prints_a_bounded_number_of_lines():
    many = _suite(configs_per_optimizer=30)
    console = Console(record=True, width=150, force_terminal=False)
    with report.progress(len(many), console) as bar:
        for r in many:
            bar.advance(r)
    lines = console.export_text().splitlines()
    assert len(lines) <= 20 + 4 + 1
    assert sum(line.startswith(("FAIL", "ERROR")) for line in lines) == 4
    assert lines[-1].startswith(f"[{len(many)}/{len(many)}] {len(many) - 4} passed, 4 failed")


def test_progress_on_a_terminal_shows_a_bar(runs):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    with report.progress(len(runs), console) as bar:
        for r in runs:
            bar.advance(r)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert f"{len(runs)}/{len(runs)}" in text and f"{len(runs) - 4} passed" in text
    assert "FAIL adamw/amsgrad/mlp/float32" in text


class _Page(HTMLParser):
    """Collects images, ids and links, and checks that every opened element is closed."""

    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.images, self.ids, self.links, self.stack, self.problems = [], set(), [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        self.ids.add(attrs.get("id"))
        self.links += [attrs[k] for k in ("href", "src") if k in attrs]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.problems and not page.stack, (page.problems, page.stack)
    return page


def _decode_png(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_html_report_is_self_contained_with_every_plot(written):
    html_path, _ = written
    page = _parse(html_path)
    assert {
        "loss",
        "loss-failing",
        "dtheta-1",
        "heatmap-optimizer-float64",
        "heatmap-optimizer-float32",
        "heatmap-model-float32",
        "failures",
        "runs",
    } <= page.ids
    assert 6 <= len(page.images) <= plots.MAX_IMAGES
    for image in page.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        width, height = _decode_png(base64.b64decode(image["src"][len(prefix) :], validate=True))
        assert width > 200 and height > 100
        assert image["alt"]
    assert all(link.startswith("data:") for link in page.links)
    text = html_path.read_text()
    assert not re.search(r"https?://|<script|@import|url\(", text, re.IGNORECASE)
    assert "3 failed, 1 error" in text and "RuntimeError: shapes" in text
    assert "versions.torch" in text and "2.13.0" in text


def test_markdown_report_references_existing_images(written):
    _, md_path = written
    text = md_path.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all((md_path.parent / name).is_file() for name in images)
    assert len(images) == len(list((md_path.parent / "report_files").glob("*.png")))
    for name in images:
        _decode_png((md_path.parent / name).read_bytes())
    assert "## Runs that did not pass (4)" in text
    assert "## optimizer runs" in text and "## model runs" in text
    assert "| adamw/amsgrad/mlp/float32 | FAIL |" in text
    assert "- seed: `0`" in text


@pytest.mark.parametrize(
    "case",
    ["empty", "single", "errors_only", "zeros_only"],
)
def test_report_edge_cases(case, tmp_path):
    results = {
        "empty": [],
        "single": [_run("adam", "user", "my_model", "float32", kind="user", tolerance=1e-5)],
        "errors_only": [
            RunResult("model", "adam", "default", "cnn", "float32", 10, 1e-5, error="boom")
        ],
        "zeros_only": [_run("sgd", c, dtype="float64", scale=0.0) for c in ("a", "b")],
    }[case]
    html_path, md_path = report.write_report(tmp_path, results, {})
    page = _parse(html_path)
    keys = {image["alt"] for image in page.images}
    if case in ("empty", "errors_only"):
        assert not page.images
        assert ("No runs." in md_path.read_text()) == (case == "empty")
    else:
        assert {"Loss curves", "|Δθ| per step"} <= keys
    if case == "zeros_only":
        assert "Exact zeros are drawn at 1e-17" in html_path.read_text()


def test_rewriting_a_report_removes_stale_images(runs, tmp_path):
    report.write_report(tmp_path, runs[:4], {})  # adam, two configs, two dtypes: heat maps
    assert len(list((tmp_path / "report_files").glob("heatmap-*.png"))) == 2
    report.write_report(tmp_path, runs[:1], {})
    assert {p.stem for p in (tmp_path / "report_files").glob("*.png")} == {"loss", "dtheta-1"}


def test_main_rerenders_a_saved_json(runs, tmp_path, capsys):
    two = [r for r in runs if r.kind == "model"][-2:]  # a passing run and the crashed one
    path = report.write_json(tmp_path / "results.json", two, {"seed": 0, "seconds": 4.5})
    assert report.main([str(path), "--report", str(tmp_path / "again")]) == 1
    out = capsys.readouterr().out
    assert "ERROR lbfgs/strong_wolfe/cnn/float64: RuntimeError" in out
    assert "2 runs: 1 passed, 0 failed, 1 error in 4.5 s" in out
    assert (tmp_path / "again" / "report.html").is_file()
    passing = report.write_json(tmp_path / "ok.json", [r for r in runs if r.passed], {})
    assert report.main([str(passing)]) == 0


def test_main_refuses_a_missing_file_or_matplotlib_as_usage_errors(
    runs, tmp_path, monkeypatch, capsys
):
    with pytest.raises(SystemExit) as exit_:
        report.main([str(tmp_path / "missing.json")])
    assert exit_.value.code == 2
    assert "error: [Errno 2] No such file or directory" in capsys.readouterr().err
    path = report.write_json(tmp_path / "results.json", runs[:2], {})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_:
        report.main([str(path), "--report", str(tmp_path / "out")])
    assert exit_.value.code == 2 and not (tmp_path / "out").exists()
    assert "--report needs matplotlib (the plots of --report)" in capsys.readouterr().err


def test_importing_the_report_does_not_import_matplotlib():
    code = "import sys, parity.report; assert 'matplotlib' not in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1], timeout=60
    )


def _chromium() -> str | None:
    for name in (
        "chromium",
        "chromium-browser",
        "chromium-headless-shell",
        "google-chrome",
        "google-chrome-stable",
        "headless_shell",
        "chrome-headless-shell",
    ):
        if found := shutil.which(name):
            return found
    cache = Path(
        os.environ.get("PLAYWRIGHT_BROWSERS_PATH", Path.home() / ".cache" / "ms-playwright")
    )
    for pattern in (
        "chromium_headless_shell-*/chrome-linux*/headless_shell",
        "chromium-*/chrome-linux*/chrome",
    ):
        for found in sorted(cache.glob(pattern)):
            return str(found)
    return None


def test_html_report_renders_in_headless_chromium(written, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no headless Chromium on PATH or in the playwright cache (Debian: apt-get install chromium-headless-shell)"
        )
    from PIL import Image

    html_path, _ = written
    shot = tmp_path / "shot.png"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        html_path.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60, cwd=tmp_path)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels[::7], axis=0)) > 50  # text, lines, heat map: not a blank page

    def share_near(hex_colour: str) -> float:
        rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        return float(np.mean(np.abs(pixels - rgb).sum(axis=1) < 40))

    assert share_near(plots.TORCH) > 1e-4 and share_near(plots.JAX) > 1e-4  # the loss curves
    assert share_near("#c5221f") > 0  # a FAIL cell in the failures table
