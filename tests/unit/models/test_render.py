"""heatmap_png: valid, deterministic PNG bytes of a sensible size; no files written."""

from __future__ import annotations

import io

import numpy as np
import pytest

from models.features import FEATURE_NAMES
from models.heatmap import HeatmapSpec
from models.render import PNG_SIGNATURE, _default_row_labels, heatmap_png

DATES = np.arange("2008-10-01", "2008-10-15", dtype="datetime64[D]")
DATES = DATES[np.is_busday(DATES)][:10]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def test_png_decodes_to_sensible_image(rng: np.random.Generator, tmp_path, monkeypatch) -> None:
    import matplotlib.image as mpimg

    monkeypatch.chdir(tmp_path)
    names = ["SPY", "TLT", "GLD", "EURUSD"]
    spec = HeatmapSpec().fit(rng.normal(size=(20, 4, 8, 10)))
    img = spec.transform(rng.normal(size=(4, 8, 10)))
    png = heatmap_png(
        img, asset_names=names, feature_names=FEATURE_NAMES, dates=DATES, title="GFC 2008"
    )
    assert png.startswith(PNG_SIGNATURE)
    decoded = mpimg.imread(io.BytesIO(png), format="png")
    assert decoded.shape == (700, 800, 4)
    assert float(decoded[..., :3].std()) > 0.05  # not a blank canvas
    assert list(tmp_path.iterdir()) == []  # pure: nothing written


def test_same_input_same_bytes(rng: np.random.Generator) -> None:
    img = rng.uniform(size=(32, 32)).astype(np.float32)
    kwargs = {
        "asset_names": [f"A{i}" for i in range(10)],
        "feature_names": FEATURE_NAMES,
        "dates": [str(d) for d in DATES],
        "title": "replay",
    }
    first = heatmap_png(img, **kwargs)
    assert heatmap_png(img.copy(), **kwargs) == first
    other = img.copy()
    other[0, 0] = 1.0 - other[0, 0]
    assert heatmap_png(other, **kwargs) != first


def test_row_labels_follow_the_layout() -> None:
    feats = FEATURE_NAMES
    assert _default_row_labels(32, ["SPY", "TLT"], feats)[8] == "TLT log_return"
    labels = _default_row_labels(32, [f"A{i}" for i in range(10)], feats)
    assert len(labels) == 32 and labels[0] == "PC1 log_return" and labels[-1] == "PC4 volume_z"


def test_custom_row_labels_and_dpi(rng: np.random.Generator) -> None:
    import matplotlib.image as mpimg

    spec = HeatmapSpec(layout="cross_section").fit(rng.normal(size=(5, 6, 8, 10)))
    img = spec.transform(rng.normal(size=(50, 8, 10)))
    png = heatmap_png(
        img,
        asset_names=[],
        feature_names=FEATURE_NAMES,
        dates=DATES,
        title="cross-section",
        row_labels=spec.row_labels([], FEATURE_NAMES),
        dpi=50,
    )
    assert mpimg.imread(io.BytesIO(png), format="png").shape == (350, 400, 4)


@pytest.mark.parametrize(
    ("image", "dates", "match"),
    [
        (np.zeros((32, 16)), DATES, "image must be square"),
        (np.zeros((32, 32)), np.arange(40), "need 1 to 32 dates, got 40"),
    ],
)
def test_bad_input(image: np.ndarray, dates, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        heatmap_png(image, asset_names=["A"], feature_names=["f"], dates=dates, title="x")
