"""Terminal tables (rich) for backtest results."""

from __future__ import annotations

import math

from rich.table import Table

_ZONE_STYLE = {"green": "green", "yellow": "yellow", "red": "bold red"}


def _p(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}"


def _zones(zones: list[tuple[int, int, int, str]]) -> str:
    return " ".join(
        f"[{_ZONE_STYLE.get(z, 'white')}]{y}:{z[0].upper()}({e})[/]" for y, _, e, z in zones
    )


def backtest_table(scores, title: str = "") -> Table:
    """One row per model: exceptions, coverage tests, traffic lights, ES and loss scores."""
    t = Table(title=title, show_lines=False, header_style="bold")
    for col, justify in (
        ("model", "left"),
        ("days", "right"),
        ("exc95 (exp)", "right"),
        ("exc99 (exp)", "right"),
        ("Kupiec p 95/99", "right"),
        ("CC p 95/99", "right"),
        ("traffic light 99% per year", "left"),
        ("Z2 97.5", "right"),
        ("FZ0 97.5", "right"),
        ("pinball 99", "right"),
    ):
        t.add_column(col, justify=justify)
    for s in scores:
        t.add_row(
            s.model,
            f"{s.n_forecasts}/{s.n_days}",
            f"{s.exceptions[0.95]} ({s.expected[0.95]:.1f})",
            f"{s.exceptions[0.99]} ({s.expected[0.99]:.1f})",
            f"{_p(s.kupiec_p[0.95])} / {_p(s.kupiec_p[0.99])}",
            f"{_p(s.cc_p[0.95])} / {_p(s.cc_p[0.99])}",
            _zones(s.zones),
            f"{s.z2:.2f}",
            f"{s.fz0:.4f}",
            f"{1e4 * s.pinball:.3f}bp",
        )
    return t


def comparison_table(comparisons) -> Table:
    """FZ0 (97.5 %) of each model against the reference, with the Diebold-Mariano p-values."""
    ref = comparisons[0].reference if comparisons else "-"
    days = comparisons[0].n_days if comparisons else 0
    t = Table(
        title=f"FZ0 97.5 against {ref} on the {days} days all models forecast (Diebold-Mariano)",
        header_style="bold",
    )
    for col in ("model", "FZ0", f"FZ0 {ref}", "mean diff", "DM stat", "p two-sided", "p better"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for c in comparisons:
        t.add_row(
            c.model,
            f"{c.model_fz0:.4f}",
            f"{c.reference_fz0:.4f}",
            f"{c.mean_diff:+.4f}",
            f"{c.statistic:.2f}",
            _p(c.pvalue),
            _p(c.pvalue_less),
        )
    return t
