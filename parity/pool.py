"""Running the selected cases in several processes (``jaxopt-parity --jobs``).

The suite is compile-bound: most of a run's time is XLA compiling its own small program, which
uses one core. Worker processes (``spawn``: no forked JAX or torch state) each build the same
case list from the CLI's selection (`parity.run.suite.select` is deterministic) and run the cases
they are handed by index; only the `RunResult` comes back. Numbers do not change: every case runs
whole inside one process, as it would alone.

Only the sections registered by `parity.sections.SECTION_MODULES` can run in workers (a section
registered at run time by the caller does not exist in a fresh process); `plan_jobs` falls back to
one process otherwise, and on an accelerator, where each process would claim the whole device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from parity import sections
from parity.report.results import RunResult
from parity.sections import Case

__all__ = ["AUTO_MAX_JOBS", "AUTO_MIN_RUNS", "plan_jobs", "run_cases"]

#: ``--jobs auto`` uses at most this many processes (each holds its own JAX and torch, ~2 GB).
AUTO_MAX_JOBS = 4
#: ``--jobs auto`` stays in one process below this many runs (a worker takes ~5 s to start).
AUTO_MIN_RUNS = 16

_WORKER_CASES: list[Case] = []


def plan_jobs(requested: int | None, cases: Sequence[Case], backend: str) -> tuple[int, str]:
    """How many processes to use, and why when it is fewer than asked (``""`` otherwise).

    Args:
      requested: ``--jobs`` (``None``: auto, the CPU count up to `AUTO_MAX_JOBS` when there are
        at least `AUTO_MIN_RUNS` runs).
      cases: the selected runs.
      backend: JAX's default backend (``"cpu"``, ``"gpu"``, ``"tpu"``).
    """
    if requested is None:
        if len(cases) < AUTO_MIN_RUNS:
            return 1, ""
        requested = min(os.cpu_count() or 1, AUTO_MAX_JOBS)
    if requested <= 1:
        return 1, ""
    if backend != "cpu":
        return 1, f"--jobs {requested}: one process on {backend} (each would claim the device)"
    builtin = {
        s.kind for s in sections.sections() if s.cases.__module__ in sections.SECTION_MODULES
    }
    foreign = sorted({c.kind for c in cases} - builtin)
    if foreign:
        return 1, f"--jobs {requested}: one process (sections {foreign} exist only in this one)"
    return min(requested, len(cases)), ""


def _init_worker(selection: dict[str, Any], platform: str | None, threads: int) -> None:
    if platform:
        os.environ["JAX_PLATFORMS"] = platform
    import torch

    # the cores shared out, as torchrun does: idle OpenMP threads spinning in one process would
    # take the core another process is compiling on
    torch.set_num_threads(threads)
    from parity.run import suite

    _WORKER_CASES[:] = suite.select(**selection)


def _execute(index: int, case_id: str) -> RunResult:
    case = _WORKER_CASES[index]
    if case.id != case_id:  # the selection is deterministic; say so loudly if it was not
        raise RuntimeError(f"worker's run {index} is {case.id}, the parent's is {case_id}")
    return case.execute()


def run_cases(
    cases: Sequence[Case],
    jobs: int,
    selection: dict[str, Any],
    on_result: Callable[[RunResult], None],
    platform: str | None = None,
) -> list[RunResult]:
    """Run ``cases`` (in ``jobs`` processes when ``jobs > 1``); results in the order of ``cases``.

    Args:
      cases: what `parity.run.suite.select` returned for ``selection``.
      jobs: processes (1: here, in order).
      selection: the keyword arguments of `parity.run.suite.select` that gave ``cases``.
      on_result: called with each result as it finishes (the progress bar).
      platform: ``JAX_PLATFORMS`` for the workers.
    """
    if jobs <= 1:
        results = []
        for case in cases:
            results.append(case.execute())
            on_result(results[-1])
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: dict[int, RunResult] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs,
        mp_context=context,
        initializer=_init_worker,
        initargs=(selection, platform, max(1, (os.cpu_count() or 1) // jobs)),
    ) as pool:
        # the later sections (the packages: one long run each) first, the short runs last
        futures = {pool.submit(_execute, i, cases[i].id): i for i in reversed(range(len(cases)))}
        for future in as_completed(futures):
            i = futures[future]
            try:
                done[i] = future.result()
            except Exception as error:  # a worker died: a failed run that says so
                done[i] = cases[i].failed(error, where="worker process: ")
            on_result(done[i])
    return [done[i] for i in range(len(cases))]
