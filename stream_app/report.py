"""Self-contained HTML backtest report (charts inlined as PNG; opens with no network)."""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import numpy as np

_ZONE_COLOUR = {"green": "#2e7d32", "yellow": "#f9a825", "red": "#c62828"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.zone{color:#fff;font-weight:bold;text-align:center}
.muted{color:#666;font-size:.9em}img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:1em}
.grid figure{margin:0}figcaption{font-size:.85em;color:#444}
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _fmt(x: float, spec: str = ".3f") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def _chart(result) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result.levels
    i95, i99 = levels.index(0.95), levels.index(0.99)
    dates = result.dates.astype("datetime64[D]").astype(object)
    y = 100 * result.realized
    fig, ax = plt.subplots(figsize=(11, 3.4))
    ax.bar(dates, y, width=1.0, color="#9e9e9e", label="realised return")
    ax.plot(dates, -100 * result.var[:, i95], color="#fb8c00", lw=1, label="-VaR 95%")
    ax.plot(dates, -100 * result.var[:, i99], color="#c62828", lw=1, label="-VaR 99%")
    for idx, colour, marker, lab in (
        (i95, "#fb8c00", "o", "exception 95%"),
        (i99, "#c62828", "x", "exception 99%"),
    ):
        hit = np.isfinite(result.var[:, idx]) & (result.realized < -result.var[:, idx])
        ax.scatter(
            np.asarray(dates)[hit],
            y[hit],
            color=colour,
            marker=marker,
            s=22,
            zorder=3,
            label=f"{lab} ({int(hit.sum())})",
        )
    ax.set_ylabel("% of NAV")
    ax.set_title(f"{result.model}: realised return against -VaR")
    ax.legend(loc="lower left", fontsize=7, ncol=5)
    ax.grid(alpha=0.3)
    b64 = _png(fig)
    plt.close(fig)
    return _img(b64, f"{result.model} returns against VaR")


def _comparison(scores) -> str:
    head = (
        "<tr><th class=l>model</th><th>forecast days</th><th>exc 95% (exp)</th><th>exc 99% (exp)"
        "</th><th>Kupiec p 95</th><th>Kupiec p 99</th><th>CC p 95</th><th>CC p 99</th>"
        "<th>Z2 97.5</th><th>FZ0 97.5</th><th>pinball 99 (bp)</th><th>ms / day</th></tr>"
    )
    rows = []
    for s in scores:
        rows.append(
            f"<tr><td class=l>{html.escape(s.model)}</td><td>{s.n_forecasts}/{s.n_days}</td>"
            f"<td>{s.exceptions[0.95]} ({s.expected[0.95]:.1f})</td>"
            f"<td>{s.exceptions[0.99]} ({s.expected[0.99]:.1f})</td>"
            f"<td>{_fmt(s.kupiec_p[0.95])}</td><td>{_fmt(s.kupiec_p[0.99])}</td>"
            f"<td>{_fmt(s.cc_p[0.95])}</td><td>{_fmt(s.cc_p[0.99])}</td>"
            f"<td>{_fmt(s.z2, '.2f')}</td><td>{_fmt(s.fz0, '.4f')}</td>"
            f"<td>{_fmt(1e4 * s.pinball)}</td><td>{_fmt(s.mean_update_ms, '.2f')}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _fz0_comparison(comparisons) -> str:
    if not comparisons:
        return ""
    ref = html.escape(comparisons[0].reference)
    head = (
        f"<tr><th class=l>model</th><th>FZ0</th><th>FZ0 {ref}</th><th>mean difference</th>"
        "<th>DM statistic</th><th>p two-sided</th><th>p (model better)</th></tr>"
    )
    rows = [
        f"<tr><td class=l>{html.escape(c.model)}</td><td>{_fmt(c.model_fz0, '.4f')}</td>"
        f"<td>{_fmt(c.reference_fz0, '.4f')}</td><td>{_fmt(c.mean_diff, '+.4f')}</td>"
        f"<td>{_fmt(c.statistic, '.2f')}</td><td>{_fmt(c.pvalue)}</td>"
        f"<td>{_fmt(c.pvalue_less)}</td></tr>"
        for c in comparisons
    ]
    return (
        f"<h2>FZ0 loss against {ref}</h2><table>{head}{''.join(rows)}</table>"
        f"<p class=muted>On the {comparisons[0].n_days} days every model forecast. "
        "Diebold-Mariano test of equal expected FZ0 loss (97.5 %), Newey-West variance; "
        "'model better': one-sided p of a lower expected loss than the reference.</p>"
    )


def _traffic(scores) -> str:
    years = sorted({y for s in scores for y, *_ in s.zones})
    head = "<tr><th class=l>model</th>" + "".join(f"<th>{y}</th>" for y in years) + "</tr>"
    rows = []
    for s in scores:
        by_year = {y: (n, e, z) for y, n, e, z in s.zones}
        cells = []
        for y in years:
            if y not in by_year:
                cells.append("<td>–</td>")
                continue
            n, e, z = by_year[y]
            cells.append(
                f'<td class=zone style="background:{_ZONE_COLOUR.get(z, "#777")}" '
                f'title="{e} exceptions in {n} days">{e}/{n}</td>'
            )
        rows.append(f"<tr><td class=l>{html.escape(s.model)}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _heatmaps(plan, results) -> str:
    """Example heatmaps: the CNN's input on the calmest and the worst day of the period."""
    try:
        from models.features import features_from_panel
        from models.heatmap import HeatmapSpec
        from models.render import heatmap_png
    except ImportError:  # the renderer is optional for the report
        return "<p class=muted>heatmap renderer not available</p>"
    panel = plan.panel.select(plan.portfolio.assets)
    feats = features_from_panel(panel)  # (n_days, n_assets, n_features)
    from models.features import FEATURE_NAMES

    size = 10
    if feats.shape[0] < 3 * size:
        return "<p class=muted>not enough days for heatmaps</p>"
    windows = np.stack(
        [
            np.transpose(feats[t - size + 1 : t + 1], (1, 2, 0))
            for t in range(size - 1, feats.shape[0])
        ]
    )
    window_dates = panel.dates[size - 1 :]
    in_period = window_dates < plan.start
    spec = HeatmapSpec().fit(windows[in_period] if in_period.sum() > 20 else windows)
    res = results[0]
    days = {}
    if res.realized.size:
        days["worst day"] = res.dates[int(np.argmin(res.realized))]
        days["calmest day"] = res.dates[int(np.argmin(np.abs(res.realized)))]
    figs = []
    for label, day in days.items():
        t = int(np.searchsorted(window_dates, day))
        if t >= len(window_dates) or window_dates[t] != day:
            continue
        png = heatmap_png(
            spec.transform(windows[t]),
            asset_names=list(panel.assets),
            feature_names=list(FEATURE_NAMES),
            dates=[str(d) for d in panel.dates[t : t + size]],
            title=f"{label}: window ending {day}",
        )
        b64 = base64.b64encode(png).decode("ascii")
        figs.append(f"<figure>{_img(b64, label)}<figcaption>{label} ({day})</figcaption></figure>")
    return f"<div class=grid>{''.join(figs)}</div>"


def write_report(path: Path, plan, results, scores, comparisons=()) -> None:
    """Write the HTML report of a backtest run to ``path``."""
    weights = ", ".join(
        f"{a} {w:.3g}" for a, w in zip(plan.portfolio.assets, plan.portfolio.weights, strict=True)
    )
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>riskmon backtest {plan.start}..{plan.end}</title><style>{_CSS}</style></head><body>",
        f"<h1>riskmon backtest {plan.start} … {plan.end}</h1>",
        f"<p class=muted>Portfolio: {html.escape(weights)}. Walk-forward, 1-day horizon, each "
        "forecast from data up to the previous close. VaR/ES as % of NAV. Generated "
        f"{time.strftime('%Y-%m-%d %H:%M')}.</p>",
        "<h2>Model comparison</h2>",
        _comparison(scores),
        "<p class=muted>Kupiec: unconditional coverage (POF). CC: Christoffersen conditional "
        "coverage. Z2: Acerbi-Szekely ES test (0 under a correct model; below -0.70 rejects at "
        "5 %). FZ0: Fissler-Ziegel joint VaR-ES loss (lower is better).</p>",
        _fz0_comparison(comparisons),
        "<h2>Basel traffic light (99 % VaR) per year</h2>",
        _traffic(scores),
        "<h2>Returns against VaR</h2>",
        *(_chart(r) for r in results),
        "<h2>Example heatmaps (CNN input)</h2>",
        _heatmaps(plan, results),
        "</body></html>",
    ]
    path.write_text("\n".join(parts), encoding="utf-8")
