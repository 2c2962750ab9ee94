import pytest

from stream_app.portfolio import PortfolioError, load_portfolios, parse_weights

ASSETS = ("SPY", "TLT", "GLD")


def test_equal_by_default():
    p = parse_weights(None, ASSETS)
    assert p.assets == ASSETS and p.weights == pytest.approx((1 / 3,) * 3)


def test_inline_weights():
    p = parse_weights("SPY=0.6, TLT=0.4", ASSETS)
    assert dict(zip(p.assets, p.weights, strict=True)) == {"SPY": 0.6, "TLT": 0.4}


def test_unknown_asset_is_a_clear_error():
    with pytest.raises(PortfolioError, match=r"\['XOM'\] are not in the data"):
        parse_weights("SPY=0.5,XOM=0.5", ASSETS)


def test_malformed_inline():
    with pytest.raises(PortfolioError, match="ASSET=WEIGHT"):
        parse_weights("SPY:0.5", ASSETS)


def test_yaml_shapes(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("SPY: 0.7\nTLT: 0.3\n")
    assert parse_weights(str(plain), ASSETS).weights == (0.7, 0.3)
    many = tmp_path / "book.yaml"
    many.write_text(
        "portfolios:\n"
        "  - name: core\n    assets: [SPY, GLD]\n    weights: [0.5, 0.5]\n"
        "    limits: {var99: 0.03}\n"
        "  - name: rates\n    weights: {TLT: 1.0}\n"
    )
    ps = load_portfolios(many)
    assert [p.name for p in ps] == ["core", "rates"]
    assert ps[0].limits == {"var99": 0.03}


def test_yaml_length_mismatch(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("portfolios:\n  - name: x\n    assets: [SPY, TLT]\n    weights: [1.0]\n")
    with pytest.raises(PortfolioError, match="2 assets and 1 weights"):
        load_portfolios(f)


def test_non_numeric_weight(tmp_path):
    with pytest.raises(PortfolioError, match="must be numbers"):
        parse_weights("SPY=abc", ASSETS)
