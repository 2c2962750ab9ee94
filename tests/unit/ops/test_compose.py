"""docker-compose.yml and ops/Dockerfile, checked statically (no Docker engine here).

The file parses; every image is pinned to a version; every riskmon command exists in the
CLI and parses; RISKMON_* variables are Settings fields with valid values; ports, hosts
and mounts agree between the services, Prometheus and Grafana.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from stream_app.cli import build_parser
from stream_app.dashboards import DATASOURCE_UID, SCRAPE_JOB, GrafanaSettings
from stream_app.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
OPS = ROOT / "ops"
PINNED = re.compile(r"^[a-z0-9./_-]+:v?\d+(\.\d+)+(-[A-Za-z0-9._-]+)?$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())


def riskmon_services(services: dict) -> dict:
    return {
        name: svc
        for name, svc in services.items()
        if str(svc.get("image", "")).startswith("riskmon:") or "build" in svc
    }


def env_of(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_the_stack_has_every_component(services):
    assert {"kafka", "redis", "worker", "replay", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    roles = kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert set(roles.split(",")) == {"broker", "controller"}, "single node KRaft"
    assert "ZOOKEEPER" not in str(kafka["environment"]).upper()


@pytest.mark.parametrize(
    "image, ok",
    [
        ("redis:7.4.2-alpine", True),
        ("prom/prometheus:v2.55.1", True),
        ("apache/kafka:3.9.1", True),
        ("redis:latest", False),
        ("redis", False),
        ("grafana/grafana:main", False),
        ("redis:7", False),
    ],
)
def test_pin_pattern(image, ok):
    assert bool(PINNED.match(image)) is ok


def test_every_image_is_pinned(services):
    for name, svc in services.items():
        assert "image" in svc, f"service {name} has no image (a built one needs a tag too)"
        image = svc["image"]
        assert PINNED.match(image), f"service {name}: image {image!r} is not pinned to a version"
        assert "latest" not in image


def test_built_image_is_shared_by_the_riskmon_services(services):
    built = {svc["image"] for svc in services.values() if "build" in svc}
    assert len(built) == 1
    for name, svc in riskmon_services(services).items():
        assert svc["image"] in built, name
    build = services["worker"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_every_riskmon_command_exists_in_the_cli(services):
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # the subcommands
    checked = 0
    for name, svc in riskmon_services(services).items():
        command = svc.get("command")
        assert isinstance(command, list) and command[0] == "riskmon", (
            f"service {name}: command must be an exec-form list starting with 'riskmon'"
        )
        assert command[1] in choices, f"service {name}: 'riskmon {command[1]}' does not exist"
        try:
            parser.parse_args(command[1:])
        except SystemExit as exc:  # argparse rejects an option
            pytest.fail(f"service {name}: {' '.join(command)} does not parse ({exc})")
        checked += 1
    assert checked >= 2  # worker and replay


def test_replay_replays_a_crisis(services):
    command = services["replay"]["command"]
    assert command[:2] == ["riskmon", "replay"]
    assert command[command.index("--crisis") + 1] == "gfc2008"


def settings_classes() -> dict[str, list[type]]:
    """Env prefix -> the settings classes the code reads with it (optional ones if present)."""
    classes: dict[str, list[type]] = {"RISKMON_": [Settings], "RISKMON_GRAFANA_": [GrafanaSettings]}
    for module, name, prefix in (
        ("stream_app.app", "StreamSettings", "RISKMON_"),
        ("stream_app.alerts_agent", "AlertSettings", "RISKMON_ALERTS_"),
    ):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        classes.setdefault(prefix, []).append(cls)
    return classes


def test_riskmon_env_vars_are_settings_fields_with_valid_values(services, monkeypatch):
    classes = settings_classes()
    for name, svc in riskmon_services(services).items():
        env = env_of(svc)
        assert env, f"service {name} sets no RISKMON_* variables"
        for key in env:
            owners = [
                cls
                for prefix, group in classes.items()
                for cls in group
                if key.startswith(prefix) and key.removeprefix(prefix).lower() in cls.model_fields
            ]
            assert owners, f"service {name}: {key} is not a field of any riskmon settings class"
        for key in list(os.environ):
            if key.startswith("RISKMON_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for group in classes.values():
            for cls in group:
                cls()  # raises on a bad value


def test_env_and_settings_disagree_is_caught(monkeypatch):
    monkeypatch.setenv("RISKMON_METRICS_PORT", "not a port")
    with pytest.raises(ValueError, match="metrics_port"):
        Settings()


def test_workers_and_producer_share_the_stream_settings(services):
    worker, replay = env_of(services["worker"]), env_of(services["replay"])
    for key in ("RISKMON_KAFKA_BOOTSTRAP", "RISKMON_APP_ID", "RISKMON_PARTITIONS"):
        assert worker[key] == replay[key], key
    for key in worker.keys() & replay.keys():
        if key.startswith("RISKMON_TOPIC_"):
            assert worker[key] == replay[key], key


def test_kafka_bootstrap_matches_the_advertised_listener(services):
    host, port = env_of(services["worker"])["RISKMON_KAFKA_BOOTSTRAP"].split(":")
    assert host in services
    advertised = services[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    listeners = {urlsplit(u).netloc for u in advertised.split(",")}
    assert f"{host}:{port}" in listeners


def test_redis_url_points_at_the_redis_service(services):
    url = urlsplit(env_of(services["worker"])["RISKMON_REDIS_URL"])
    assert url.scheme == "redis" and url.hostname in services
    assert url.port == 6379
    assert services[url.hostname]["image"].startswith("redis:")


def test_prometheus_scrapes_every_worker_on_its_metrics_port(services, prometheus_config):
    worker_env = env_of(services["worker"])
    port = int(worker_env["RISKMON_METRICS_PORT"])
    assert worker_env["RISKMON_METRICS_HOST"] == "0.0.0.0", "must be reachable from Prometheus"
    assert str(port) in [str(p) for p in services["worker"].get("expose", [])]
    assert f":{port}/metrics" in " ".join(services["worker"]["healthcheck"]["test"])
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    job = jobs[SCRAPE_JOB]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # DNS service discovery of the compose service name: every replica (--scale worker=N)
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == port
    assert "container_name" not in services["worker"], "a fixed name prevents --scale"
    assert not services["worker"].get("ports"), "published ports prevent --scale"


def test_prometheus_and_grafana_mounts(services, prometheus_config):
    prom = services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    assert (ROOT / mounts["/etc/prometheus"]).resolve() == OPS / "prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    for rule_file in prometheus_config["rule_files"]:
        assert (OPS / "prometheus" / rule_file).is_file()

    graf = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in graf["volumes"]}
    assert (ROOT / mounts["/etc/grafana/provisioning"]).resolve() == OPS / "grafana/provisioning"
    providers = yaml.safe_load((OPS / "grafana/provisioning/dashboards/riskmon.yml").read_text())
    (provider,) = providers["providers"]
    dash_path = provider["options"]["path"]
    assert (ROOT / mounts[dash_path]).resolve() == OPS / "grafana" / "dashboards"
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dash_path + "/")
    assert (OPS / "grafana" / "dashboards" / Path(home).name).is_file()
    assert "3000:3000" in graf["ports"]


def test_grafana_datasource_has_the_fixed_uid_and_reaches_prometheus(services):
    doc = yaml.safe_load((OPS / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "prometheus"
    url = urlsplit(ds["url"])
    assert url.hostname in services and services[url.hostname]["image"].startswith("prom/")
    assert f"{url.port}:{url.port}" in services[url.hostname]["ports"]


def test_start_order_and_healthchecks(services):
    def deps(name: str) -> dict:
        return services[name].get("depends_on", {})

    assert deps("worker")["kafka"]["condition"] == "service_healthy"
    assert deps("worker")["redis"]["condition"] == "service_healthy"
    assert deps("replay")["worker"]["condition"] == "service_healthy"
    assert deps("replay")["kafka"]["condition"] == "service_healthy"
    assert deps("grafana")["prometheus"]["condition"] == "service_healthy"
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    for name in ("kafka", "redis", "worker", "prometheus", "grafana"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
    assert services["replay"].get("restart") == "no", "a finished replay must not restart"


def test_dockerfile_installs_cpu_torch_first():
    text = (OPS / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    runs = [line for line in text.splitlines() if line.startswith("RUN pip install")]
    assert "torch==2.13.0" in runs[0] and "/whl/cpu" in runs[0]
    assert any("pip install ." in r for r in runs[1:])
    for path in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / path).exists(), path
    assert re.search(r'^CMD \["riskmon", "worker"\]', text, re.M)


def test_the_image_ships_the_data_files_the_code_reads():
    """ops/Dockerfile runs `pip install .` (not editable): every tracked non-Python file of
    the packages (demo portfolio, shipped history, model artifacts) must be package data."""
    import fnmatch
    import subprocess
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"].get("package-data", {})
    tracked = subprocess.run(
        ["git", "ls-files", "models", "producers", "stream_app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    missing = []
    for path in tracked:
        if path.endswith(".py"):
            continue
        package, _, rest = path.partition("/")
        patterns = package_data.get(package, []) + package_data.get("*", [])
        if not any(fnmatch.fnmatch(rest, pattern) for pattern in patterns):
            missing.append(path)
    assert not missing, f"not installed by `pip install .` (pyproject package-data): {missing}"
