"""Driver code shared by the training commands (:mod:`stream_app.train_cnn`, :mod:`stream_app.train_lstm_copula`).

Data loading, year lists, torch thread settings, progress bars, artifact
writing and the yearly-retrained walk-forward loop. The model-specific parts
(what an artifact holds, how it is trained) stay in the drivers.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from models.base import VaRModel
from models.panel import Panel
from models.walkforward import WalkForwardResult, walk_forward

#: Folder of the shipped artifacts.
ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"

ArtifactT = TypeVar("ArtifactT")


def load_panel(data: str | None) -> Panel:
    """The daily history in the CSV folder ``data``, or the shipped one (``None`` or ``"shipped"``)."""
    from producers.history import load_history

    return load_history(None if data in (None, "shipped") else data)


def parse_years(spec: str) -> list[int]:
    """Sorted distinct years of a comma-separated list of years and ranges.

    Examples
    --------
    >>> parse_years("2008,2012-2014")
    [2008, 2012, 2013, 2014]
    >>> parse_years("2007-2009")
    [2007, 2008, 2009]
    """
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        if not re.fullmatch(r"\d{4}(-\d{4})?", part):
            raise ValueError(
                f"years {spec!r}: {part!r} is not a year YYYY or a range YYYY-YYYY "
                "(e.g. 2008,2012-2023)"
            )
        if "-" in part:
            a, b = (int(v) for v in part.split("-"))
            if b < a:
                raise ValueError(f"years {spec!r}: range {part!r} ends before it starts")
            out.extend(range(a, b + 1))
        else:
            out.append(int(part))
    if not out:
        raise ValueError(f"no years in {spec!r}")
    return sorted(set(out))


def parse_day(text: str) -> str:
    """An argparse type for a date option such as ``--until``: ``YYYY-MM-DD``, checked.

    Examples
    --------
    >>> parse_day("2019-12-31")
    '2019-12-31'
    """
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            raise ValueError
        return str(np.datetime64(text.strip(), "D"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date YYYY-MM-DD (e.g. 2019-12-31)"
        ) from None


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous setting after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def rich_progress(description: str, *fields: str) -> Any:
    """A ``rich.progress.Progress``: the description, a bar, the ``fields`` columns, the time.

    Parameters
    ----------
    description : str
        Template of the first column (``"{task.description}"``, with rich markup).
    *fields : str
        Templates of the text columns between the bar and the elapsed time.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(description),
        BarColumn(),
        *(TextColumn(f) for f in fields),
        TimeElapsedColumn(),
    )


def write_artifact(payload: Any, path: str | Path) -> Path:
    """``torch.save`` a payload of tensors and plain types to ``path`` (folders made); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def concat_results(parts: Sequence[WalkForwardResult]) -> WalkForwardResult:
    """One model's consecutive walk-forward results as one (the first one's name and levels)."""
    if not parts:
        raise ValueError("no test years given")
    return WalkForwardResult(
        model=parts[0].model,
        dates=np.concatenate([p.dates for p in parts]),
        realized=np.concatenate([p.realized for p in parts]),
        var=np.concatenate([p.var for p in parts]),
        es=np.concatenate([p.es for p in parts]),
        levels=parts[0].levels,
        update_seconds=np.concatenate([p.update_seconds for p in parts]),
    )


def walk_forward_retrained(
    panel: Panel,
    years: Sequence[int],
    fit: Callable[[int, np.datetime64, ArtifactT | None], ArtifactT],
    make_model: Callable[[ArtifactT], VaRModel],
    *,
    warm_days: int = 750,
    on_year: Callable[[int, ArtifactT, WalkForwardResult], None] | None = None,
) -> WalkForwardResult:
    """Out-of-sample forecasts of a model retrained before each test year.

    For test year ``Y``: ``fit(Y, until, previous)`` trains an artifact on data
    up to ``until = Y-1``-12-31 (``previous`` is the artifact of the year
    before, ``None`` for the first), then :func:`models.walkforward.walk_forward`
    runs ``make_model(artifact)`` over ``Y``, fed from ``warm_days`` returns
    before it.

    Parameters
    ----------
    panel : Panel
        The evaluation panel.
    years : sequence of int
        Test years, increasing.
    fit : callable
        ``(year, until, previous) -> artifact``; must not look past ``until``.
    make_model : callable
        ``artifact -> VaRModel``, a fresh model.
    warm_days : int, default=750
        Returns fed before each year.
    on_year : callable, optional
        Called with ``(year, artifact, result)`` after each year.

    Returns
    -------
    WalkForwardResult
        The years' results concatenated (:func:`concat_results`).
    """
    r = panel.log_returns()
    dates = panel.dates[1:]
    parts: list[WalkForwardResult] = []
    prev: ArtifactT | None = None
    for year in years:
        until = np.datetime64(f"{int(year) - 1}-12-31", "D")
        art = fit(int(year), until, prev)
        prev = art
        first = int(np.searchsorted(dates, np.datetime64(f"{int(year)}-01-01", "D")))
        start = max(0, first - int(warm_days))
        res = walk_forward(
            make_model(art), r[start:], dates[start:], f"{int(year)}-01-01", f"{int(year)}-12-31"
        )
        parts.append(res)
        if on_year is not None:
            on_year(int(year), art, res)
    return concat_results(parts)
