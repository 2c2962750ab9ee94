"""The `riskmon` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from models.exceptions import RiskmonError

EPILOG = """\
examples:
  riskmon backtest --period gfc2008                 # shipped history, all assets, equal weights
  riskmon backtest --data ../shared/data/daily --period 2020 --models hs,ewma,gjr_skewt
  riskmon backtest --data DIR --weights SPY=0.6,TLT=0.4 --period 2007-01-01:2023-12-31
  riskmon backtest --weights book.yaml --period covid2020 --out runs/covid
  riskmon backtest --data DIR --models hs,lstm_copula,cnn --period 2008-01-01:2009-12-31 \\
      --retrain yearly --train-epochs 3     # deep models retrained before each year
"""


def _add_backtest(sub: argparse._SubParsersAction) -> None:
    from models.registry import BASELINES, MODELS

    p = sub.add_parser(
        "backtest",
        help="walk-forward VaR/ES backtest of the models on daily history",
        description=(
            "Walk-forward, out-of-sample, 1-day-ahead VaR/ES backtest. Each forecast uses data up to "
            "the previous close only. Prints a table per model and writes forecasts.csv, "
            "summary.json and report.html to --out."
        ),
        epilog=EPILOG
        + "\nmodels:\n"
        + "\n".join(f"  {name:<16} {desc}" for name, (_, _, desc) in MODELS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="folder of daily CSVs (Date,Open,High,Low,Close,Volume); default: the shipped history",
    )
    p.add_argument(
        "--weights",
        metavar="SPEC",
        help="'equal' (default), 'SPY=0.6,TLT=0.4' or a YAML file with the weights",
    )
    p.add_argument("--assets", metavar="A,B,..", help="restrict equal weights to these assets")
    p.add_argument(
        "--models",
        default=",".join(BASELINES),
        help="comma-separated model names, or 'baselines' (default: all baselines)",
    )
    p.add_argument(
        "--period",
        default="gfc2008",
        help="crisis preset (gfc2008, covid2020, euro2011, china2015, rates2022), a year (2020) or "
        "START:END dates (default: gfc2008)",
    )
    p.add_argument(
        "--warmup-days",
        type=int,
        default=1000,
        help="trading days fed before the period to warm the models up (default 1000)",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/backtest-<time>)")
    p.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="models run in parallel"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo models")
    p.add_argument(
        "--retrain",
        choices=("none", "yearly"),
        default="none",
        help="deep models (lstm_copula, cnn): 'none' uses the shipped artifacts (default); "
        "'yearly' retrains them before each calendar year of the period on the data before it "
        "(walk-forward: a 2008 forecast never saw 2008)",
    )
    p.add_argument(
        "--train-epochs",
        type=int,
        metavar="N",
        help="with --retrain yearly: at most N training epochs per year (default: the recipes')",
    )
    p.add_argument(
        "--train-seed",
        type=int,
        metavar="S",
        help="with --retrain yearly: training seed (default 0)",
    )
    p.add_argument("--max-ffill", type=int, default=3, help="calendar: forward-fill at most N days")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(func=cmd_backtest)


def cmd_backtest(args: argparse.Namespace) -> int:
    from rich.console import Console

    from models.registry import BASELINES, parse_model_names
    from producers.history import load_history
    from producers.presets import resolve_period
    from stream_app.backtest_cmd import (
        RETRAINABLE,
        BacktestPlan,
        Retrain,
        compare_fz0,
        run_backtest,
        score_result,
        write_forecasts,
        write_summary,
    )
    from stream_app.portfolio import equal_weights, parse_weights
    from stream_app.tables import backtest_table, comparison_table

    console = Console(width=None if sys.stdout.isatty() else 200)
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: must be >= 1 (models run in parallel)")
    if args.weights is not None and not args.weights.strip():
        raise ValueError("--weights '': give 'equal', 'SPY=0.6,TLT=0.4' or a YAML file")
    if args.assets and args.weights and args.weights.strip().lower() != "equal":
        raise ValueError(
            f"--assets {args.assets} and --weights {args.weights}: give one of them "
            "(--assets means equal weights; --weights names its own assets)"
        )
    models = parse_model_names(args.models)
    if args.retrain == "yearly":
        if not any(m in RETRAINABLE for m in models):
            raise ValueError(
                f"--retrain yearly retrains the deep models ({', '.join(RETRAINABLE)}); "
                f"--models {','.join(models)} has none of them"
            )
        if args.train_epochs is not None and args.train_epochs < 1:
            raise ValueError(f"--train-epochs must be >= 1, got {args.train_epochs}")
    elif args.train_epochs is not None or args.train_seed is not None:
        raise ValueError("--train-epochs and --train-seed only apply with --retrain yearly")
    weighted = None  # a portfolio from --weights, checked against the data once loaded
    if args.assets:
        wanted = [a.strip() for a in args.assets.split(",") if a.strip()]
    elif args.weights and args.weights.strip().lower() != "equal":
        weighted = parse_weights(args.weights, None)
        wanted = list(weighted.assets)
    else:
        wanted = None  # every asset of the data
    panel = load_history(args.data, wanted, max_ffill=args.max_ffill)
    if weighted is None:
        portfolio = equal_weights(list(panel.assets))
    else:
        portfolio = weighted
        portfolio.check_against(panel.assets)
    panel = panel.select(portfolio.assets)
    history = panel  # all of it: --retrain yearly trains on the days before each year
    start, end, _ = resolve_period(args.period, panel.dates, warmup_days=0)
    first = int(np.searchsorted(panel.dates, start))
    if first < args.warmup_days + 1:
        console.print(
            f"[yellow]warning:[/] only {first} trading days before {start} for warm-up "
            f"(asked for {args.warmup_days}); early forecasts may be missing or less reliable"
        )
    panel = panel.between(panel.dates[max(0, first - args.warmup_days - 1)], end)
    plan = BacktestPlan(panel, portfolio, tuple(models), start, end, seed=args.seed)
    out = Path(args.out) if args.out else Path("runs") / time.strftime("backtest-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    retrain = Retrain(
        args.retrain,
        history=history if args.retrain == "yearly" else None,
        source=args.data or "shipped history",
        epochs=args.train_epochs,
        seed=args.train_seed or 0,
        warmup_days=args.warmup_days,
    )
    console.print(
        f"[bold]riskmon backtest[/] {start} .. {end}, {len(portfolio.assets)} assets, "
        f"{len(models)} models, warm-up from {panel.dates[0]}"
        + (
            f"; {', '.join(m for m in models if m in RETRAINABLE)} retrained yearly on "
            f"{retrain.source}"
            + (
                " (lstm_copula also on the shipped history before each year)"
                if "lstm_copula" in models and retrain.source != "shipped history"
                else ""
            )
            if args.retrain == "yearly"
            else ""
        )
    )
    t0 = time.perf_counter()
    results, retrain_record = run_backtest(
        plan, retrain, jobs=args.jobs, show_progress=not args.no_progress
    )
    elapsed = time.perf_counter() - t0
    scores = [score_result(r) for r in results]
    console.print(backtest_table(scores, title=f"{args.period}: {start} .. {end}"))
    comparisons = compare_fz0(results, classical=BASELINES)
    if comparisons:
        console.print(comparison_table(comparisons))
    n_rows = write_forecasts(out / "forecasts.csv", results)
    write_summary(out / "summary.json", plan, scores, retrain_record, comparisons)
    if not args.no_report:
        from stream_app.report import write_report

        write_report(out / "report.html", plan, results, scores, comparisons)
    console.print(
        f"{n_rows} forecasts in {out / 'forecasts.csv'}; "
        + ("" if args.no_report else f"report {out / 'report.html'}; ")
        + f"walk-forward took {elapsed:.1f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riskmon",
        description="riskmon: streaming real-time risk monitor for multi-asset portfolios.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_backtest(sub)
    for module in ("stream_app.cli_train", "stream_app.cli_stream", "stream_app.cli_ops"):
        try:
            register = importlib.import_module(module).register
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but one of its imports is missing
                raise
            continue
        register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; a pydantic settings error names each bad field."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        parts = []
        for e in errors(include_url=False):
            field = ".".join(str(x) for x in e.get("loc", ())) or "?"
            parts.append(f"{field}={e.get('input')!r}: {e.get('msg')}")
        title = getattr(exc, "title", "settings")
        return f"invalid {title} ({'; '.join(parts)}); set by an option or a RISKMON_* variable"
    return " ".join(str(exc).split("\n"))


def main(argv: list[str] | None = None) -> int:
    from stream_app.heap import keep_heap

    keep_heap()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (RiskmonError, ValueError) as exc:
        print(f"riskmon {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"riskmon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
