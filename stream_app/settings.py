"""Settings of the stream application, read once from the environment.

Every field can be set with an environment variable named ``RISKMON_<FIELD>``
(upper case), e.g. ``RISKMON_KAFKA_BOOTSTRAP=broker:9092``. Lists are given as
JSON (``RISKMON_ASSETS='["SPY","TLT"]'``). Secrets are :class:`pydantic.SecretStr`
and URLs have their passwords masked whenever settings are printed or logged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "mask_url"]


def mask_url(url: str | None) -> str | None:
    """Return ``url`` with the password of its userinfo replaced by ``***``.

    Examples
    --------
    >>> mask_url("redis://user:hunter2@localhost:6379/0")
    'redis://user:***@localhost:6379/0'
    >>> mask_url("kafka://localhost:9092")
    'kafka://localhost:9092'
    """
    if url is None:
        return None
    start = url.find("://")
    if start < 0:
        return url
    start += 3
    at = url.rfind("@")  # the last "@": a password may contain "@" or "/"
    if at < start:
        return url
    userinfo = url[start:at]
    if ":" not in userinfo:
        return url
    return f"{url[:start]}{userinfo.split(':', 1)[0]}:***{url[at:]}"


class Settings(BaseSettings):
    """Configuration of the workers, producers and embedded services.

    ``None`` for :attr:`kafka_bootstrap` / :attr:`redis_url` means "start the
    embedded broker / Valkey on a free loopback port".
    """

    model_config = SettingsConfigDict(
        env_prefix="RISKMON_",
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # -- services -----------------------------------------------------------
    app_id: str = Field("riskmon", min_length=1, description="Faust app id = consumer group.")
    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; None starts the embedded broker."
    )
    redis_url: str | None = Field(None, description="redis://...; None starts embedded Valkey.")
    redis_password: SecretStr | None = None

    # -- topics ---------------------------------------------------------------
    topic_ticks: str = "ticks"
    topic_dlq: str = "ticks.dlq"
    topic_bars: str = "bars"
    topic_risk: str = "risk"
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of every topic.")

    # -- metrics --------------------------------------------------------------
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535, description="0 = any free port.")

    # -- faust tuning (see DESIGN.md, measured on the embedded broker) --------
    broker_session_timeout: float = Field(6.0, gt=0)
    broker_heartbeat_interval: float = Field(1.0, gt=0)
    broker_rebalance_timeout: float = Field(10.0, gt=0)
    broker_request_timeout: float = Field(30.0, gt=0)
    consumer_fetch_max_wait_ms: int = Field(
        10, ge=0, le=10_000, description="The broker adds this to latency: keep it small."
    )
    ingest_batch_max: int = Field(
        64,
        ge=1,
        description="Max Faust events per ingest batch (a run of a partition's fetched "
        "ticks messages is one event).",
    )
    ingest_run_max: int = Field(
        500, ge=1, description="Max ticks messages per run (one event of the ingest agent)."
    )
    ingest_batch_within: float = Field(0.02, gt=0, description="Max seconds to fill a batch.")
    ingest_chunk_bytes: int = Field(
        262_144, ge=1024, description="Process a batch in chunks of about this many bytes."
    )
    data_dir: Path | None = Field(None, description="Faust data dir; None = a temp dir.")

    # -- ingest semantics -----------------------------------------------------
    assets: tuple[str, ...] | None = Field(
        None, description="Accepted assets; None accepts any well-formed name."
    )
    max_tick_bytes: int = Field(4096, ge=64, le=1_048_576)
    max_bundle_bytes: int = Field(
        1_048_576, ge=64, le=16_777_216, description="Max bytes of a bundle (JSON array of ticks)."
    )
    portfolio: str = Field("default", min_length=1, description="Key of messages on `bars`.")
    last_price_interval_s: float = Field(
        900.0, ge=0, description="Event-time seconds between last-price messages; 0 = off."
    )
    state_ttl_days: float = Field(
        10.0, gt=0, description="Evict an asset idle this long in event time (per run)."
    )
    trading_day_offset_hours: float = Field(
        0.0, ge=-24, le=24, description="Trading day = UTC date of (event time + offset)."
    )
    evict_every_s: float = Field(5.0, gt=0, description="Wall seconds between eviction sweeps.")

    # -- producers / replay ---------------------------------------------------
    replay_run_id: str | None = Field(None, description="Run id stamped on replayed ticks.")

    # -- embedded services ----------------------------------------------------
    embedded_host: str = "127.0.0.1"
    embedded_start_timeout: float = Field(20.0, gt=0)
    log_dir: Path | None = Field(None, description="Where embedded services log; None = temp.")

    @field_validator("replay_run_id")
    @classmethod
    def _run_id_chars(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", v):
            raise ValueError(
                f"replay_run_id={v!r} must be 1-64 characters of letters, digits, _ . : -"
            )
        return v

    @model_validator(mode="after")
    def _timeouts(self) -> Settings:
        if self.broker_session_timeout > self.broker_request_timeout:
            raise ValueError(
                f"broker_session_timeout={self.broker_session_timeout} must be <= "
                f"broker_request_timeout={self.broker_request_timeout}"
            )
        if self.broker_heartbeat_interval >= self.broker_session_timeout:
            raise ValueError(
                f"broker_heartbeat_interval={self.broker_heartbeat_interval} must be < "
                f"broker_session_timeout={self.broker_session_timeout}"
            )
        return self

    @property
    def stream_topics(self) -> list[str]:
        """The stream's own topics: ticks, DLQ, bars, risk (created when missing)."""
        return [self.topic_ticks, self.topic_dlq, self.topic_bars, self.topic_risk]

    # -- masking ----------------------------------------------------------------
    def safe_dict(self) -> dict[str, Any]:
        """Settings as a plain dict with secrets and URL passwords masked (for logs)."""
        out = self.model_dump()
        for key, value in out.items():
            if isinstance(getattr(self, key), SecretStr):
                out[key] = "**********"
            elif isinstance(value, str):
                out[key] = mask_url(value)
        return out

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        for key, value in super().__repr_args__():
            yield key, (mask_url(value) if isinstance(value, str) else value)

    def __str__(self) -> str:
        return repr(self)
