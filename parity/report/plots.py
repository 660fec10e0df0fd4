"""The report's figures: loss curves, |Δθ| per step and a heat map of the final differences.

Each function takes :class:`~parity.report.results.RunResult` objects and returns :class:`Plot` objects
holding PNG bytes, so :mod:`parity.report` can embed them in HTML or write them next to Markdown.
Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``): nothing global
changes for the caller, no backend is switched and no window can open. matplotlib is imported
inside the functions, so importing this module is cheap.

The number of images is bounded whatever the number of runs: at most :data:`MAX_PANELS` panels per
image and :data:`MAX_IMAGES` images in all; what does not fit is named in the captions and is in
the report's tables.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.report.order import is_default, natural, ratio, sort_key
from parity.report.results import RunResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MAX_IMAGES",
    "MAX_PANELS",
    "Plot",
    "difference_plots",
    "heatmap_plots",
    "loss_plots",
    "report_plots",
]

MAX_PANELS = 12  #: panels in one image
MAX_IMAGES = 12  #: images in one report
MAX_HEATMAP_COLUMNS = 30  #: configurations shown one by one; the rarer ones share a last column
TORCH, JAX, REFERENCE = "#1f77b4", "#ff7f0e", "#555555"  #: line colours (tab:blue, tab:orange)


@dataclass(frozen=True)
class Plot:
    """One rendered image.

    Attributes:
      key: file stem and HTML id (``"loss"``, ``"dtheta-1"``, ``"heatmap-model-float32"``).
      title: a heading for the image.
      caption: what is drawn and what was left out.
      png: the PNG bytes.
    """

    key: str
    title: str
    caption: str
    png: bytes


def report_plots(results: Sequence[RunResult]) -> list[Plot]:
    """Every figure of the report, at most :data:`MAX_IMAGES`: losses, |Δθ|, heat maps."""
    plots = loss_plots(results)
    plots += difference_plots(results, max_images=max(1, (MAX_IMAGES - len(plots)) // 2))
    plots += heatmap_plots(results, max_images=MAX_IMAGES - len(plots))
    return plots[:MAX_IMAGES]


# --------------------------------------------------------------------------- loss curves


def loss_plots(results: Sequence[RunResult]) -> list[Plot]:
    """Both frameworks' loss curves overlaid (and the NumPy reference's where recorded).

    One image with a panel per (kind, model), showing the run that came closest to its tolerance;
    a second image with the failing runs, worst first. Runs without losses (errors) are skipped.

    Returns:
      Zero, one or two :class:`Plot` objects (keys ``"loss"`` and ``"loss-failing"``).
    """
    with_loss = sorted((r for r in results if r.loss_torch or r.loss_jax), key=sort_key)
    by_model: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for r in with_loss:
        by_model[r.kind, r.model].append(r)
    chosen = [
        max(runs, key=lambda r: (r.passed, _finite_or(ratio(r), -1.0)))
        for runs in by_model.values()
    ]
    failing = sorted(
        (r for r in with_loss if not r.passed), key=lambda r: -_finite_or(ratio(r), 1e300)
    )
    plots = []
    if chosen:
        shown = chosen[:MAX_PANELS]
        caption = (
            "Training loss at each step (before its update): torch solid, JAX dashed, NumPy "
            "reference dotted where recorded. One panel per model, showing its run closest to "
            "its tolerance (red title: that run failed); the largest |Δloss| is written in each panel."
        )
        plots.append(
            Plot(
                "loss",
                "Loss curves",
                caption + _omitted(len(chosen) - len(shown), "model"),
                _loss_png(shown),
            )
        )
    if failing:
        shown = failing[:MAX_PANELS]
        caption = "Loss curves of the failing runs, worst first (same lines as above)."
        plots.append(
            Plot(
                "loss-failing",
                "Loss curves of failing runs",
                caption + _omitted(len(failing) - len(shown), "failing run"),
                _loss_png(shown),
            )
        )
    return plots


def _loss_png(runs: Sequence[RunResult]) -> bytes:
    from matplotlib.ticker import NullLocator

    fig, axes = _grid(len(runs), width=3.9, height=2.9)
    for ax, r in zip(axes, runs, strict=False):
        curves = [(r.loss_torch, TORCH, "-", "torch"), (r.loss_jax, JAX, "--", "JAX")]
        if r.loss_reference:
            curves.append((r.loss_reference, REFERENCE, ":", "NumPy reference"))
        arrays = [(_clean(values), colour, style, label) for values, colour, style, label in curves]
        for y, colour, style, label in arrays:
            ax.plot(np.arange(len(y)), y, style, color=colour, lw=1.6, label=label)
        finite = np.concatenate([y[np.isfinite(y)] for y, *_ in arrays])
        if finite.size and finite.min() > 0:
            ax.set_yscale("log")
            if finite.max() > 10 * finite.min():  # labelled decades: no minor ticks needed
                ax.yaxis.set_minor_locator(NullLocator())
        n = min(len(r.loss_torch), len(r.loss_jax))
        gap = np.abs(_clean(r.loss_torch[:n]) - _clean(r.loss_jax[:n]))
        text = (
            f"max |Δloss| = {np.nanmax(gap):.2g}" if np.isfinite(gap).any() else "losses not finite"
        )
        ax.text(0.02, 0.03, text, transform=ax.transAxes, fontsize=7, color="0.25")
        ax.set_title(_short(r.id, 48), fontsize=8, color="0.1" if r.passed else "#c00000")
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(which="both", labelsize=7)
        ax.legend(fontsize=6, loc="upper right", frameon=False)
    return _png(fig)


# --------------------------------------------------------------------------- |Δθ| per step


def difference_plots(results: Sequence[RunResult], *, max_images: int = 3) -> list[Plot]:
    """The worst scaled parameter difference after each step, on a log scale.

    A panel per (kind, model, dtype), a line per optimizer (the worst over its configurations at
    each step), each run's tolerance as a dashed line. Scaled means ``|Δθ| / max(1, |θ|)``, the
    figure judged against the tolerance; it is |Δθ| itself for parameters of magnitude up to 1.
    Exact zeros are drawn at a floor below every non-zero value, marked by a dotted line; a step
    with an infinite or NaN difference is marked by a cross at the top of the panel.

    Args:
      results: the runs; those without per-step differences are skipped.
      max_images: at most this many images of :data:`MAX_PANELS` panels each.

    Returns:
      :class:`Plot` objects with keys ``"dtheta-1"``, ``"dtheta-2"``, ...
    """
    panels: dict[tuple[str, str, str], list[RunResult]] = defaultdict(list)
    for r in sorted(results, key=sort_key):
        if r.param_scaled:
            panels[r.kind, r.model, r.dtype].append(r)
    if not panels:
        return []
    values = np.concatenate([_clean(r.param_scaled) for runs in panels.values() for r in runs])
    positive = values[np.isfinite(values) & (values > 0)]
    floor = 10.0 ** (math.floor(math.log10(positive.min())) - 1) if positive.size else 1e-17
    floor = min(floor, 1e-17)
    colours = _optimizer_colours(r.optimizer for runs in panels.values() for r in runs)
    items = list(panels.items())
    pages = [items[i : i + MAX_PANELS] for i in range(0, len(items), MAX_PANELS)]
    plots = []
    for number, page in enumerate(pages[:max_images], start=1):
        omitted = sum(len(p) for p in pages[max_images:]) if number == max_images else 0
        drawn = np.concatenate(
            [np.asarray(r.param_scaled, float) for _, runs in page for r in runs]
        )
        caption = (
            "Worst scaled parameter difference |Δθ| / max(1, |θ|) between JAX and torch after each "
            "step, log scale: one line per optimizer (worst over its configurations); dashed lines "
            "are the tolerances."
            + (
                f" Exact zeros are drawn at {floor:.0e} (dotted line)."
                if (drawn == 0).any()
                else ""
            )
            + (
                " A cross at the top marks a step with an infinite or NaN difference."
                if not np.isfinite(drawn).all()
                else ""
            )
            + _omitted(omitted, "panel")
        )
        title = "|Δθ| per step" + (
            f" ({number} of {min(len(pages), max_images)})" if len(pages) > 1 else ""
        )
        plots.append(
            Plot(f"dtheta-{number}", title, caption, _difference_png(page, floor, colours))
        )
    return plots


def _difference_png(
    page: Sequence[tuple[tuple[str, str, str], list[RunResult]]],
    floor: float,
    colours: dict[str, Any],
) -> bytes:
    from matplotlib.ticker import NullLocator

    fig, axes = _grid(len(page), width=4.2, height=3.0, legend=True)
    shown: dict[str, Any] = {}
    for ax, ((kind, model, dtype), runs) in zip(axes, page, strict=False):
        by_optimizer: dict[str, list[RunResult]] = defaultdict(list)
        for r in runs:
            by_optimizer[r.optimizer].append(r)
        tolerances = {r.tolerance for r in runs if r.tolerance > 0}  # 0: must match bitwise
        zeros = False
        for name, group in by_optimizer.items():
            length = max(len(r.param_scaled) for r in group)
            stack = np.full((len(group), length), np.nan)
            for i, r in enumerate(group):
                stack[i, : len(r.param_scaled)] = r.param_scaled
            bad = (np.isinf(stack) | (np.isnan(stack) & ~_padding(group, length))).any(axis=0)
            worst = np.fmax.reduce(np.where(np.isfinite(stack), stack, np.nan), axis=0)
            zeros |= bool((worst == 0).any())
            steps = np.arange(1, length + 1)
            (line,) = ax.plot(
                steps, np.where(worst == 0, floor, worst), color=colours[name], lw=1.3
            )
            shown.setdefault(name, line)
            if bad.any():  # a non-finite difference: a cross at the top of the panel
                ax.plot(
                    steps[bad],
                    np.ones(bad.sum()),
                    "x",
                    color=colours[name],
                    ms=5,
                    mew=1.5,
                    transform=ax.get_xaxis_transform(),
                )
            if len(tolerances) > 1:
                for tol in {r.tolerance for r in group if r.tolerance > 0}:
                    ax.axhline(tol, color=colours[name], ls="--", lw=0.9)
        if len(tolerances) == 1:
            ax.axhline(tolerances.pop(), color="k", ls="--", lw=0.9)
        if zeros:
            ax.axhline(floor, color="0.5", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # many decades: minor ticks only cost time
        ax.set_title(
            f"{model} · {dtype}" + ("" if kind == "optimizer" else f" ({kind})"), fontsize=9
        )
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("scaled |Δθ|", fontsize=7)
        ax.tick_params(which="both", labelsize=7)
    fig.legend(
        list(shown.values()),
        list(shown),
        loc="lower center",
        ncols=min(8, len(shown)),
        fontsize=7,
        frameon=False,
    )
    return _png(fig)


def _padding(group: Sequence[RunResult], length: int) -> np.ndarray:
    """True where a run in ``group`` has no step (it ran fewer steps than the longest)."""
    return np.arange(length)[None, :] >= np.array([len(r.param_scaled) for r in group])[:, None]


# --------------------------------------------------------------------------- heat maps


def heatmap_plots(results: Sequence[RunResult], *, max_images: int = 6) -> list[Plot]:
    """Optimizer (rows) × configuration (columns) heat maps of ``log10(worst / tolerance)``.

    One map per (kind, dtype). A cell is the worst over the models that ran that pair; where a
    kind has a single configuration and several models, the columns are the models instead.
    Failing cells are outlined and errors marked ``ERR``. With more than
    :data:`MAX_HEATMAP_COLUMNS` configurations, the rarest share a last column ``other (worst)``.
    Groups with fewer than two cells are not drawn.

    Returns:
      :class:`Plot` objects with keys ``"heatmap-<kind>-<dtype>"``.
    """
    groups: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for r in sorted(results, key=sort_key):
        groups[r.kind, r.dtype].append(r)
    plots = []
    for (kind, dtype), runs in groups.items():
        by_model = len({r.config for r in runs}) == 1 and len({r.model for r in runs}) > 1
        column_of = (lambda r: r.model) if by_model else (lambda r: r.config)
        rows = sorted({r.optimizer for r in runs})
        counts = Counter(column_of(r) for r in runs)
        columns = sorted(counts, key=lambda c: (not is_default(c), -counts[c], natural(c)))
        other = ""
        if len(columns) > MAX_HEATMAP_COLUMNS:
            other = "other (worst)"
            columns = [*columns[: MAX_HEATMAP_COLUMNS - 1], other]
        if len(rows) * len(columns) < 2 or len(plots) >= max_images:
            continue
        index = {c: j for j, c in enumerate(columns)}
        cells: dict[tuple[int, int], list[RunResult]] = defaultdict(list)
        for r in runs:
            cells[rows.index(r.optimizer), index.get(column_of(r), len(columns) - 1)].append(r)
        caption = (
            f"{kind} runs in {dtype}: log10(worst difference / tolerance) for each optimizer and "
            + ("model." if by_model else "configuration (worst over models).")
            + " Below 0 passes; outlined cells failed; ERR: the run raised; blank: not run; "
            "'exact': no difference at all."
            + (
                f" Configurations run by few optimizers share the column '{other}'."
                if other
                else ""
            )
        )
        png = _heatmap_png(rows, columns, cells, title=f"{kind} · {dtype}")
        plots.append(
            Plot(f"heatmap-{kind}-{dtype}", f"Heat map: {kind} runs, {dtype}", caption, png)
        )
    return plots


def _heatmap_png(
    rows: list[str],
    columns: list[str],
    cells: dict[tuple[int, int], list[RunResult]],
    *,
    title: str,
) -> bytes:
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    with np.errstate(divide="ignore"):  # log10(0) = -inf: an exact match
        grid = np.full((len(rows), len(columns)), np.nan)
        for (i, j), runs in cells.items():
            grid[i, j] = np.log10(
                max((ratio(r) for r in runs), key=lambda x: math.inf if math.isnan(x) else x)
            )
    finite = grid[np.isfinite(grid)]
    low = max(-16.0, min(-1.0, math.floor(finite.min()))) if finite.size else -1.0
    high = max(1.0, math.ceil(finite.max())) if finite.size else 1.0
    norm = TwoSlopeNorm(0.0, low, high)
    fig = _figure(min(24.0, 2.4 + 0.42 * len(columns)), 1.7 + 0.32 * len(rows))
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(np.clip(grid, low, high)), cmap="RdYlGn_r", norm=norm, aspect="auto"
    )
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("log10(worst / tolerance)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    annotate = len(rows) * len(columns) <= 600
    for (i, j), runs in cells.items():
        failed = not all(r.passed for r in runs)
        value = grid[i, j]
        if any(r.error is not None for r in runs):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.35"))
            ax.text(j, i, "ERR", ha="center", va="center", fontsize=6, color="white", weight="bold")
        elif annotate:
            shade = float(norm(np.clip(value, low, high))) if not np.isnan(value) else 0.5
            colour = "black" if 0.2 < shade < 0.8 else "white"
            weight = "bold" if failed else "normal"
            ax.text(
                j,
                i,
                _cell_text(value),
                ha="center",
                va="center",
                fontsize=6,
                color=colour,
                weight=weight,
            )
        if failed:
            ax.add_patch(
                Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, ec="black", lw=1.6)
            )
    ax.set_xticks(
        range(len(columns)), [_short(c, 28) for c in columns], rotation=60, ha="right", fontsize=7
    )
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    return _png(fig)


# --------------------------------------------------------------------------- helpers


def _figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def _grid(
    n: int, *, width: float, height: float, legend: bool = False
) -> tuple[Figure, list[Axes]]:
    """``n`` panels of ``width`` × ``height`` inches, four to a row, with fixed margins in inches
    (a constrained layout would redraw every tick label several times: slow with many panels)."""
    columns = min(4, max(1, n))
    rows = math.ceil(n / columns)
    bottom = 0.45 if legend else 0.0  # room for a figure legend
    fig = _figure(width * columns, height * rows + bottom, layout=None)
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.75 / w, right=1 - 0.15 / w, bottom=(bottom + 0.5) / h, top=1 - 0.35 / h,
        wspace=0.9 / (width - 0.9), hspace=0.85 / (height - 0.85),
    )  # fmt: skip
    axes = [fig.add_subplot(rows, columns, k + 1) for k in range(n)]
    return fig, axes


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _clean(values: Sequence[float]) -> np.ndarray:
    """As float64, with ±inf turned into NaN (a gap in the line)."""
    y = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(y), y, np.nan)


def _finite_or(x: float, default: float) -> float:
    return x if math.isfinite(x) else default


def _optimizer_colours(names: Iterable[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the ten dark shades first
    return {name: palette[order[k % 20]] for k, name in enumerate(sorted(set(names)))}


def _cell_text(log_ratio: float) -> str:
    if np.isnan(log_ratio):
        return "nan"
    if np.isinf(log_ratio):
        return "exact" if log_ratio < 0 else "inf"
    return f"{log_ratio:.1f}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _omitted(n: int, what: str) -> str:
    return f" {n} more {what}{'s' if n != 1 else ''} not drawn (see the tables)." if n > 0 else ""
