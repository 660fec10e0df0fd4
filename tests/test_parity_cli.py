"""The parity suite as a tool: selection, judging, and planted errors reported with the right run.

A planted error is a deliberate bug in jaxopt_port, patched in for one test: the suite must exit
1 and name exactly the runs the bug touches, and no others.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from parity import __main__ as parity_main
from parity import report, sections
from parity.__main__ import main
from parity.metric import F64_GATE
from parity.report.results import RunResult
from parity.run import packages, suite


def _run(args, tmp_path, capsys):
    path = tmp_path / "results.json"
    code = main([*args, "--json", str(path)])
    output = capsys.readouterr().out
    runs = json.loads(path.read_text())["runs"]
    return code, output, {r["id"] for r in runs if not r["passed"]}, runs


def test_planted_eps_inside_the_root_fails_exactly_adams_runs(monkeypatch, tmp_path, capsys):
    adam = importlib.import_module("jaxopt_port.optim.adam")  # the module, not the factory
    eps_inside = functools.partial(adam.scale_by_adam, eps_in_sqrt=True)
    monkeypatch.setattr(adam, "scale_by_adam", eps_inside)
    args = ["--optimizers", "adam,adamw,sgd", "--models", "formula", "--dtype", "float64"]
    code, output, failed, runs = _run([*args, "--quick"], tmp_path, capsys)
    assert code == 1
    assert failed == {"adam/torch_default/mlp/float64", "adamw/torch_default/mlp/float64"}
    assert len(runs) == 3
    for run_id in failed:
        run = next(r for r in runs if r["id"] == run_id)
        assert run["worst"] > 1e3 * run["tolerance"]  # ε inside the root moves θ by ~1e-8
        miss = f"missed by {run['worst'] / run['tolerance']:.3g}×"
        assert any(
            line.startswith(f"FAIL {run_id}: ") and miss in line for line in output.splitlines()
        )


@pytest.mark.slow
def test_planted_lr_one_step_late_fails_exactly_the_scheduled_run(monkeypatch, tmp_path, capsys):
    from jaxopt_port.optim import _primitives

    on_time = _primitives.lr_at
    late = lambda lr, count: on_time(lr, jnp.maximum(count - 1, 0))
    monkeypatch.setattr(_primitives, "lr_at", late)
    args = ["--optimizers", "sgd", "--models", "formula", "--dtype", "float64"]
    code, output, failed, runs = _run(args, tmp_path, capsys)
    assert code == 1
    # a constant lr is the same one step late; only the changing lr shows it
    assert failed == {"sgd/scheduled_momentum/mlp/float64"}
    assert len(runs) == 12
    assert "FAIL sgd/scheduled_momentum/mlp/float64" in output


def test_unpatched_runs_pass_and_exit_zero(tmp_path, capsys):
    args = ["--optimizers", "rprop,asgd", "--models", "formula", "--quick"]
    code, output, failed, runs = _run(args, tmp_path, capsys)
    assert (code, failed) == (0, set()), output
    assert {(r["dtype"], r["optimizer"]) for r in runs} == {
        (d, o) for d in ("float64", "float32") for o in ("rprop", "asgd")
    }
    for run in runs:
        assert len(run["param_abs"]) == len(run["loss_torch"]) == run["steps"] == 50
        assert run["loss_torch"][-1] < run["loss_torch"][0]  # it trains
        if run["dtype"] == "float64":
            assert run["reference_scaled"] <= F64_GATE
            assert len(run["state_scaled"]) == 50


def test_default_suite_covers_every_optimizer_model_and_dtype():
    cases = suite.select()
    from jaxopt_port.optim import OPTIMIZERS

    formula = [c for c in cases if c.kind == "optimizer"]
    assert {c.optimizer for c in formula if c.dtype == "float64"} == set(OPTIMIZERS)
    assert {c.optimizer for c in formula if c.dtype == "float32"} == set(OPTIMIZERS)
    models = [c for c in cases if c.kind == "model"]
    twins = [m for s in sections.sections() if s.kind == "model" for m in s.models]
    assert {(c.model, c.dtype) for c in models} == {(m, d) for m in twins for d in suite.DTYPES}
    packages_ = [c for c in cases if c.kind not in ("optimizer", "model")]
    assert {(c.kind, c.dtype) for c in packages_} == {(p.name, p.dtype) for p in packages.PACKAGES}
    assert len({c.id for c in cases}) == len(cases)
    full = suite.select(full=True)
    assert {c.optimizer for c in full if c.kind == "model"} == set(OPTIMIZERS)
    assert len(full) > len(cases)


def test_unknown_names_are_refused_with_the_valid_ones(capsys):
    with pytest.raises(ValueError, match=r"unknown optimizer\(s\) \['adamm'\].*'adam'"):
        suite.select(optimizers=["adamm"])
    assert main(["--models", "resnet", "--list"]) == 2
    assert "unknown model(s) ['resnet']" in capsys.readouterr().out


def test_list_prints_the_selected_runs(capsys):
    assert main(["--list", "--optimizers", "sgd", "--models", "formula", "--dtype", "float32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "1 runs"
    assert lines[0].split() == ["optimizer", "sgd/torch_default/mlp/float32"]


def test_a_registered_section_is_listed_run_and_reported_without_touching_the_cli(
    monkeypatch, tmp_path, capsys
):
    """A new kind of run plugs in by registering: --help, --models, --list, the runs and the
    JSON take it up (the planted section's run is judged by the float64 gate)."""
    monkeypatch.setattr(sections, "_REGISTRY", dict(sections._REGISTRY))

    def run(dtype):
        result = RunResult("demo", "sgd", "planted", "toy", dtype, 1, F64_GATE)
        result.record_parameters([np.ones(2)], [np.ones(2) + 2 * F64_GATE])
        return result.judge()

    sections.register(
        sections.Section(
            "demo",
            "demo",
            {"toy": "a planted section"},
            lambda: ("sgd",),
            lambda s: [
                sections.Case("demo", "sgd", "planted", "toy", d, functools.partial(run, d))
                for d in s.dtypes
            ],
        )
    )
    assert "toy (a planted section)" in " ".join(parity_main._parser().format_help().split())
    assert main(["--list", "--models", "toy"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "demo      sgd/planted/toy/float64",
        "demo      sgd/planted/toy/float32",
        "2 runs",
    ]
    code, _, failed, runs = _run(["--models", "toy", "--dtype", "float64"], tmp_path, capsys)
    assert code == 1 and failed == {"sgd/planted/toy/float64"}
    assert [r["kind"] for r in runs] == ["demo"]


def test_a_crashing_run_is_a_failure_that_names_it():
    def boom():
        raise FloatingPointError("planted")

    result = suite.Case("model", "sgd", "default", "cnn", "float64", boom).execute()
    assert not result.passed and math.isinf(result.miss)
    assert result.error == "FloatingPointError: planted"
    assert result.id == "sgd/default/cnn/float64"


@pytest.mark.parametrize(
    ("figures", "worst", "where"),
    [
        ({"param_scaled": [1e-16, 3e-13], "state_scaled": [2e-13, 1e-13]}, 3e-13, "parameters after step 2"),
        ({"param_scaled": [1e-16], "state_scaled": [4e-13], "reference_scaled": 1e-13}, 4e-13, "optimizer state after step 1"),
        ({"param_scaled": [1e-16, math.nan]}, math.inf, "parameters after step 2 (NaN)"),
        ({"param_scaled": [1e-16], "reference_scaled": 2e-12}, 2e-12, "NumPy reference at the end"),
        # a failing run names the first step past the tolerance, and where the worst is
        ({"param_scaled": [1e-16, 5e-12, 3e-11]}, 3e-11,
         "parameters after step 2 (first past the tolerance; worst 3e-11: parameters after step 3)"),
        ({"param_scaled": [2e-12, 1e-13], "state_scaled": [1e-13, 4e-12]}, 4e-12,
         "parameters after step 1 (first past the tolerance; worst 4e-12: optimizer state after step 2)"),
        ({"param_scaled": [1e-16, 5e-12, math.nan]}, math.inf,
         "parameters after step 2 (first past the tolerance; worst NaN: parameters after step 3)"),
    ],
)  # fmt: skip
def test_judge_takes_the_worst_figure_and_names_it(figures, worst, where):
    result = RunResult("optimizer", "adam", "c", "mlp", "float64", 2, F64_GATE, **figures).judge()
    assert (result.worst, result.where) == (worst, where)
    assert result.passed == (worst <= F64_GATE)
    assert RunResult.from_dict(json.loads(json.dumps(result.to_dict()))).worst == worst


def test_python_dash_m_parity_is_the_console_script(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "parity", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "--report" in out.stdout and "--full" in out.stdout
    # a usage error is argparse's: exit status 2, one line, no traceback
    missing = str(tmp_path / "missing.json")
    out = subprocess.run(
        [sys.executable, "-m", "parity", "--from-json", missing],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().endswith(f"jaxopt-parity: error: --from-json {missing}: no such file")


# -- the command line: plain help, usage errors before anything runs, JSON before the report ------


def test_help_is_plain_text_and_names_only_files_in_the_repository(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--report" in text and "exit status:" in text and "jaxopt_port[parity]" in text
    for markup in ("``", "::", ":func:", ":data:", "DESIGN.md", "FACTS.md", "../"):
        assert markup not in text, markup
    root = Path(__file__).parents[1]
    for path in re.findall(r"[\w./-]+\.(?:md|py|json)\b", text):
        assert path in ("results.json", "report.md") or (root / path).is_file(), path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--steps", "ten"], "argument --steps: expected an integer, got 'ten'"),
        (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["--from-json", "{tmp}/missing.json"], "--from-json {tmp}/missing.json: no such file"),
        (["--from-json", "{tmp}/text.json"], "--from-json: {tmp}/text.json is not a jaxopt-parity results file (not JSON"),
        (["--from-json", "{tmp}/other.json"], "--from-json: {tmp}/other.json is not a jaxopt-parity results file (no 'schema'"),
    ],
)  # fmt: skip
def test_bad_values_are_usage_errors_before_anything_runs(
    argv, message, monkeypatch, tmp_path, capsys
):
    (tmp_path / "text.json").write_text("PASS\n")
    (tmp_path / "other.json").write_text('{"runs": []}')
    argv = [a.format(tmp=tmp_path) for a in argv]
    ran = _record_runs(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(["--optimizers", "sgd", "--models", "formula", *argv])
    assert exit_.value.code == 2 and ran == []
    err = capsys.readouterr().err
    assert f"jaxopt-parity: error: {message.format(tmp=tmp_path)}" in err, err


def _record_runs(monkeypatch) -> list:
    ran = []
    monkeypatch.setattr(suite.Case, "execute", lambda case: ran.append(case.id))
    return ran


def test_a_missing_optional_package_is_named_before_any_run(monkeypatch, tmp_path, capsys):
    ran = _record_runs(monkeypatch)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails, as uninstalled
    args = ["--optimizers", "sgd", "--models", "formula", "--quick", "--dtype", "float64"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--report", str(tmp_path / "report")])
    assert exit_.value.code == 2 and ran == []
    err = capsys.readouterr().err
    assert "jaxopt-parity: error: this command needs packages that are not installed: " in err
    assert (
        "matplotlib (the plots of --report)" in err and "pip install 'jaxopt_port[parity]'" in err
    )
    assert not (tmp_path / "report").exists()
    # what each command needs: --list and --from-json run nothing, so need less
    parse = lambda *argv: parity_main._parser().parse_args(list(argv))
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert parity_main.missing_packages(parse("--report", "r")) == ["sklearn", "matplotlib"]
    assert parity_main.missing_packages(parse("--list", "--report", "r")) == []
    assert parity_main.missing_packages(parse("--from-json", "x", "--report", "r")) == [
        "matplotlib"
    ]
    assert parity_main.missing_packages(parse("--from-json", "x")) == []


def test_the_json_is_written_before_the_report_and_survives_its_failure(
    monkeypatch, tmp_path, capsys
):
    out = tmp_path / "report"

    def failing_report(directory, results, meta):
        # the runs' JSON is already on disk when the report starts
        assert json.loads((out / "results.json").read_text())["runs"][0]["passed"]
        raise RuntimeError("planted drawing failure")

    monkeypatch.setattr(report, "write_report", failing_report)
    args = ["--optimizers", "sgd", "--models", "formula", "--quick", "--dtype", "float64"]
    code = main([*args, "--steps", "2", "--report", str(out)])
    captured = capsys.readouterr()
    assert code == 3, captured.out  # every run passed, the report failed
    assert "the report could not be written: RuntimeError: planted drawing failure" in captured.err
    assert f"the results are in {out / 'results.json'}" in captured.err
    assert "the run passed" in captured.out
    # the saved results re-render into a report without running anything
    monkeypatch.undo()
    ran = _record_runs(monkeypatch)
    assert main(["--from-json", str(out / "results.json"), "--report", str(out)]) == 0
    assert ran == [] and (out / "report.html").is_file() and (out / "report.md").is_file()


def test_jobs_are_planned_from_the_runs_the_backend_and_where_sections_live():
    from parity import pool

    cases = suite.select(optimizers=["sgd"], models=["formula"])
    few = cases[: pool.AUTO_MIN_RUNS - 1]
    many = (cases * pool.AUTO_MIN_RUNS)[: pool.AUTO_MIN_RUNS]
    assert pool.plan_jobs(None, few, "cpu") == (1, "")  # not worth a worker's start-up
    auto = min(os.cpu_count() or 1, pool.AUTO_MAX_JOBS)
    assert pool.plan_jobs(None, many, "cpu") == (auto, "")
    assert pool.plan_jobs(3, few, "cpu") == (3, "")
    assert pool.plan_jobs(8, few[:2], "cpu") == (2, "")  # never more workers than runs
    jobs, note = pool.plan_jobs(2, few, "gpu")
    assert jobs == 1 and "claim the device" in note
    planted = sections.Case("demo", "sgd", "planted", "toy", "float64", lambda: None)
    sections.register(
        sections.Section("demo", "demo", {"toy": ""}, lambda: ("sgd",), lambda s: [planted])
    )
    try:
        jobs, note = pool.plan_jobs(2, [*few, planted], "cpu")
    finally:
        sections._REGISTRY.pop("demo")
    assert jobs == 1 and "['demo'] exist only in this one" in note


def test_runs_in_worker_processes_give_the_numbers_of_one_process(tmp_path, capsys):
    args = ["--optimizers", "sgd,adam", "--models", "formula", "--quick", "--steps", "5"]
    code_1, _, _, alone = _run([*args, "--jobs", "1"], tmp_path, capsys)
    code_2, _, _, pooled = _run([*args, "--jobs", "2"], tmp_path, capsys)
    assert code_1 == code_2 == 0
    assert [r["id"] for r in pooled] == [r["id"] for r in alone]  # the parent's order
    for a, b in zip(alone, pooled, strict=True):
        for key in ("worst", "param_abs", "loss_torch", "loss_jax", "reference_scaled"):
            assert a[key] == b[key], (a["id"], key)


def test_a_worker_whose_runs_differ_from_the_parents_fails_those_runs_by_name():
    from parity import pool

    wanted = dict(optimizers=["sgd"], models=["formula"], dtypes=["float64"], quick=True)
    cases = suite.select(**wanted)
    other = {**wanted, "optimizers": ["adam"]}  # what the workers will build instead
    results = pool.run_cases(cases, 2, other, lambda result: None)
    assert [r.optimizer for r in results] == ["sgd"]
    assert not results[0].passed
    assert "worker's run 0 is adam/" in results[0].error
