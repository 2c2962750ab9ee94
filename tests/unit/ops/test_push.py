"""``riskmon dashboards push`` against a tiny local HTTP stub of Grafana's API.

The stub is a stand-in for our error handling and the payload shape (what grafana-client
sends): folders and dashboards by uid, token / basic auth, 401 / 403 / 500, a slow answer,
and a port where nothing listens.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stream_app.cli import main
from stream_app.dashboards import (
    DATASOURCE_UID,
    DashboardPushError,
    GrafanaSettings,
    build_dashboards,
    export_dashboards,
    push_dashboards,
)
from stream_app.embedded import find_free_port

TOKEN = "glsa_test_token_0123456789"


class FakeGrafana(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.folders: dict[str, str] = {}
        self.dashboards: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict, object]] = []
        self.accept = {f"Bearer {TOKEN}", "Basic " + base64.b64encode(b"ops:s3cret").decode()}
        self.fail: dict[tuple[str, str], int] = {}  # (method, path prefix) -> status
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def posts(self, path: str) -> list:
        return [body for method, p, _, body in self.requests if method == "POST" and p == path]


class Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        srv.requests.append((method, self.path, dict(self.headers), body))
        time.sleep(srv.delay)
        if self.headers.get("Authorization") not in srv.accept:
            return self._send(401, {"message": "Invalid API key"})
        for (m, prefix), status in srv.fail.items():
            if m == method and self.path.startswith(prefix):
                return self._send(status, {"message": f"stub says {status}"})
        if method == "GET" and self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid not in srv.folders:
                return self._send(404, {"message": "folder not found"})
            return self._send(200, {"uid": uid, "title": srv.folders[uid]})
        if method == "POST" and self.path == "/api/folders":
            srv.folders[body["uid"]] = body["title"]
            return self._send(200, {"uid": body["uid"], "title": body["title"]})
        if method == "GET" and self.path.startswith("/api/dashboards/uid/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid not in srv.dashboards:
                return self._send(404, {"message": "Dashboard not found"})
            return self._send(200, srv.dashboards[uid])
        if method == "POST" and self.path == "/api/dashboards/db":
            board = dict(body["dashboard"])
            uid = board["uid"]
            old = srv.dashboards.get(uid)
            if old is not None and not body.get("overwrite"):
                return self._send(412, {"message": "version-mismatch"})
            version = (old["dashboard"]["version"] + 1) if old else 1
            board.update(id=7, version=version)
            url = f"/d/{uid}/slug"
            srv.dashboards[uid] = {
                "dashboard": board,
                "meta": {"folderUid": body.get("folderUid"), "url": url},
            }
            return self._send(
                200, {"id": 7, "uid": uid, "url": url, "status": "success", "version": version}
            )
        return self._send(404, {"message": "not found"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


@pytest.fixture
def grafana():
    srv = FakeGrafana()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in ("URL", "TOKEN", "USER", "PASSWORD", "TIMEOUT"):
        monkeypatch.delenv(f"RISKMON_GRAFANA_{key}", raising=False)


def settings(url: str, **kw) -> GrafanaSettings:
    kw.setdefault("token", TOKEN)
    return GrafanaSettings(url=url, timeout=kw.pop("timeout", 5.0), **kw)


def test_push_creates_folder_and_dashboards_with_the_expected_payload(grafana):
    results = push_dashboards(settings(grafana.url))
    boards = build_dashboards()
    assert [r.status for r in results] == ["created"] * 3
    assert {r.uid for r in results} == {b["uid"] for b in boards.values()}
    assert all(r.url == f"/d/{r.uid}/slug" and r.version == 1 for r in results)
    assert grafana.posts("/api/folders") == [{"title": "riskmon", "uid": "riskmon"}]
    payloads = grafana.posts("/api/dashboards/db")
    assert len(payloads) == 3
    for payload in payloads:
        assert set(payload) == {"dashboard", "folderUid", "overwrite", "message"}
        assert payload["folderUid"] == "riskmon" and payload["overwrite"] is True
        board = payload["dashboard"]
        assert board["id"] is None  # overwrite by uid, never by numeric id
        expected = next(b for b in boards.values() if b["uid"] == board["uid"])
        assert {k: v for k, v in board.items() if k != "id"} == expected
    auth = {headers.get("Authorization") for _, _, headers, _ in grafana.requests}
    assert auth == {f"Bearer {TOKEN}"}


def test_push_is_idempotent(grafana):
    push_dashboards(settings(grafana.url))
    n_posts = len(grafana.posts("/api/dashboards/db"))
    again = push_dashboards(settings(grafana.url))
    assert [r.status for r in again] == ["unchanged"] * 3
    assert len(grafana.posts("/api/dashboards/db")) == n_posts  # nothing rewritten
    assert len(grafana.posts("/api/folders")) == 1  # the folder exists now
    assert len(grafana.dashboards) == 3


def test_push_overwrites_an_edited_dashboard_by_uid(grafana):
    push_dashboards(settings(grafana.url))
    grafana.dashboards["riskmon-pipeline-health"]["dashboard"]["title"] = "edited in the UI"
    results = {r.uid: r for r in push_dashboards(settings(grafana.url))}
    assert results["riskmon-pipeline-health"].status == "updated"
    assert results["riskmon-pipeline-health"].version == 2
    assert results["riskmon-portfolio-risk"].status == "unchanged"
    stored = grafana.dashboards["riskmon-pipeline-health"]["dashboard"]
    assert stored["title"] == "riskmon / Pipeline health"


def test_basic_auth_and_datasource_uid(grafana):
    push_dashboards(
        settings(grafana.url, token=None, user="ops", password="s3cret"), datasource_uid="PX1"
    )
    (headers,) = {h["Authorization"] for _, _, h, _ in grafana.requests}
    assert headers == "Basic " + base64.b64encode(b"ops:s3cret").decode()
    text = json.dumps(grafana.posts("/api/dashboards/db"))
    assert '"uid": "PX1"' in text and DATASOURCE_UID not in text


def test_wrong_token_is_a_clear_error_that_hides_the_secret(grafana):
    with pytest.raises(DashboardPushError) as err:
        push_dashboards(settings(grafana.url, token="glsa_wrong_secret_value"))
    msg = str(err.value)
    assert "401" in msg and "refused the credentials" in msg and grafana.url in msg
    assert "RISKMON_GRAFANA_TOKEN" in msg and "glsa_wrong_secret_value" not in msg
    assert not grafana.posts("/api/dashboards/db")


def test_wrong_password_names_the_user_not_the_password(grafana):
    with pytest.raises(DashboardPushError, match=r"401.*basic auth as 'ops'") as err:
        push_dashboards(settings(grafana.url, token=None, user="ops", password="nope-pw"))
    assert "nope-pw" not in str(err.value)


def test_no_credentials_says_how_to_set_them(grafana):
    with pytest.raises(DashboardPushError, match="set RISKMON_GRAFANA_TOKEN"):
        push_dashboards(settings(grafana.url, token=None))


def test_grafana_unreachable():
    url = f"http://127.0.0.1:{find_free_port()}"  # nothing listens there
    with pytest.raises(DashboardPushError, match=r"cannot reach Grafana at .*Connection refused"):
        push_dashboards(settings(url))


def test_bad_url():
    with pytest.raises(DashboardPushError, match="must look like http://host:3000"):
        push_dashboards(settings("localhost:3000"))


def test_permission_denied_and_server_errors(grafana):
    grafana.fail[("POST", "/api/folders")] = 403
    with pytest.raises(DashboardPushError, match=r"denied permission \(403\) to create folder"):
        push_dashboards(settings(grafana.url))
    grafana.fail.clear()
    grafana.fail[("POST", "/api/dashboards/db")] = 500
    with pytest.raises(DashboardPushError, match=r"failed to save dashboard .*500"):
        push_dashboards(settings(grafana.url))
    grafana.fail.clear()
    grafana.fail[("POST", "/api/dashboards/db")] = 400
    with pytest.raises(DashboardPushError, match=r"rejected dashboard .*\(400\)"):
        push_dashboards(settings(grafana.url))


def test_slow_grafana_times_out(grafana):
    grafana.delay = 2.0
    t0 = time.monotonic()
    with pytest.raises(DashboardPushError, match=r"did not answer within 0.5 s"):
        push_dashboards(settings(grafana.url, timeout=0.5))
    assert time.monotonic() - t0 < 10


def test_cli_push_reads_the_environment(grafana, monkeypatch, capsys):
    monkeypatch.setenv("RISKMON_GRAFANA_TOKEN", TOKEN)
    monkeypatch.setenv("RISKMON_GRAFANA_URL", grafana.url)
    assert main(["dashboards", "push"]) == 0
    out = capsys.readouterr().out
    assert out.count("created") == 3 and f"{grafana.url}/d/riskmon-portfolio-risk/slug" in out
    assert main(["dashboards", "push", "--url", grafana.url, "--folder", "Risk"]) == 0
    assert capsys.readouterr().out.count("unchanged") == 3


def test_cli_push_errors_exit_2(grafana, monkeypatch, capsys):
    monkeypatch.setenv("RISKMON_GRAFANA_TOKEN", "wrong")
    assert main(["dashboards", "push", "--url", grafana.url]) == 2
    err = capsys.readouterr().err
    assert "riskmon dashboards: error:" in err and "401" in err


def test_cli_push_from_a_folder(grafana, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RISKMON_GRAFANA_USER", "ops")
    monkeypatch.setenv("RISKMON_GRAFANA_PASSWORD", "s3cret")
    export_dashboards(tmp_path)
    (tmp_path / "model-calibration.json").unlink()
    assert main(["dashboards", "push", "--url", grafana.url, "--from-dir", str(tmp_path)]) == 0
    assert set(grafana.dashboards) == {"riskmon-portfolio-risk", "riskmon-pipeline-health"}
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["dashboards", "push", "--url", grafana.url, "--from-dir", str(tmp_path)]) == 2
    assert "broken.json" in capsys.readouterr().err
