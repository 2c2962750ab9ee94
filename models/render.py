"""A heatmap as a PNG for people: labelled rows, dated columns, a colour bar.

Pure: returns the PNG bytes, writes no file. matplotlib is imported inside
the function (Agg canvas, no pyplot global state), so importing the engine
does not pull in matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from models.heatmap import block_index

__all__ = ["PNG_SIGNATURE", "heatmap_png"]

#: First bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _default_row_labels(
    size: int, asset_names: Sequence[str], feature_names: Sequence[str]
) -> list[str]:
    """Row labels of the ``"assets"`` layout of :class:`~models.heatmap.HeatmapSpec`."""
    n_features = len(feature_names)
    if len(asset_names) * n_features <= size:
        heads = [str(a) for a in asset_names]
    else:
        heads = [f"PC{c + 1}" for c in range(size // n_features)]
    return [f"{h} {f}" for h in heads for f in feature_names]


def heatmap_png(
    image: ArrayLike,
    *,
    asset_names: Sequence[str],
    feature_names: Sequence[str],
    dates: Sequence[Any],
    title: str,
    row_labels: Sequence[str] | None = None,
    dpi: int = 100,
) -> bytes:
    """Render a square heatmap image as PNG bytes with axis labels.

    Parameters
    ----------
    image : array-like of shape (size, size)
        Values in [0, 1], as produced by :meth:`HeatmapSpec.transform`.
    asset_names : sequence of str
        Assets of the window, in the window's order.
    feature_names : sequence of str
        Features of the window, in the window's order.
    dates : sequence of date-like of length window_size
        Days of the window's columns, oldest first.
    title : str
    row_labels : sequence of str, optional
        Labels of the source rows (``HeatmapSpec.row_labels(...)``); by
        default derived for ``layout="assets"``: ``"asset feature"`` when
        ``n_assets * n_features <= size``, else ``"PCk feature"``.
    dpi : int, default=100
        The figure is 8 x 7 inches, so 800 x 700 pixels at the default.

    Returns
    -------
    bytes
        A PNG file (starts with :data:`PNG_SIGNATURE`). Identical inputs give
        identical bytes (no timestamp in the metadata).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] != img.shape[1]:
        raise ValueError(f"image must be square 2-d, got shape {img.shape}")
    size = img.shape[0]
    if len(feature_names) < 1:
        raise ValueError("feature_names must not be empty")
    labels = (
        list(row_labels)
        if row_labels is not None
        else _default_row_labels(size, asset_names, feature_names)
    )
    n_days = len(dates)
    if not 1 <= len(labels) <= size:
        raise ValueError(f"need 1 to {size} row labels, got {len(labels)}")
    if not 1 <= n_days <= size:
        raise ValueError(f"need 1 to {size} dates, got {n_days}")

    r_idx = block_index(len(labels), size)
    c_idx = block_index(n_days, size)
    # tick at the centre of each source block
    r_pos = [float(np.flatnonzero(r_idx == i).mean()) for i in range(len(labels))]
    c_pos = [float(np.flatnonzero(c_idx == j).mean()) for j in range(n_days)]
    date_labels = [str(np.datetime64(d, "D")) if not isinstance(d, str) else d for d in dates]

    fig = Figure(figsize=(8, 7), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(img, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_yticks(r_pos, labels, fontsize=max(4, min(8, 240 // len(labels))))
    ax.set_xticks(c_pos, date_labels, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("day (oldest left)")
    ax.set_ylabel("asset / component  feature")
    ax.set_title(title)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("scaled value (0 = fitted low, 1 = fitted high)")
    fig.subplots_adjust(left=0.22, right=0.97, bottom=0.16, top=0.93)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
