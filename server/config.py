"""The server's configuration: one ``Settings``, read from ``WEFT_*`` environment variables.

CLI flags override the environment (``Settings(**flags)``: init arguments win over env).
Validated at start: a server that would listen on a non-loopback address without auth
refuses to start unless ``insecure`` is set.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crdt.history import MAX_UPDATE_BYTES
from server.auth import check_secret, is_ssh_key_line, verifying_key

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
INSTANCE_LABEL = re.compile(r"[A-Za-z0-9._-]{1,32}")
"""What ``WEFT_INSTANCE`` may be: a label, to which a random part is added."""
MAX_LEEWAY_SECONDS = 86_400
"""The most clock skew ``WEFT_JWT_LEEWAY_SECONDS`` may tolerate: a day. More is no skew
but a token's lifetime made longer (``inf`` made an expired token good for ever)."""


class QuotaOverride(BaseModel):
    """Per-tenant quota values that differ from the defaults (unset fields: the default)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt quota is an error, not ignored

    max_update_bytes: int | None = Field(default=None, gt=0)
    max_doc_bytes: int | None = Field(default=None, gt=0)
    updates_per_second: float | None = Field(allow_inf_nan=False, default=None, gt=0)
    updates_burst: int | None = Field(default=None, gt=0)
    max_connections: int | None = Field(default=None, gt=0)


def _reads_as_path(value: str) -> bool:
    """Whether ``value`` reads as the path of a file in a directory that exists: said back
    in an error. Anything else may be a secret or key given in the wrong place (a JWK,
    an HS256 secret, a private key without its PEM lines), never echoed."""
    return "/" in value and Path(value).expanduser().parent.is_dir()


def _unshown(value: str) -> str:
    return f"{len(value)} characters, not shown: it may be a secret"


class Settings(BaseSettings):
    """Everything ``weft serve`` can be told; each field is also ``WEFT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="WEFT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    store: str = "sqlite:///./weft-data/weft.db"

    # auth: HS256 with ``secret``; RS256/ES256 with ``public_key`` (PEM text or a PEM file)
    secret: SecretStr | None = None
    public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = 0  # clock skew tolerated on exp/nbf: 0 to MAX_LEEWAY_SECONDS
    insecure: bool = False

    # default per-tenant quotas; ``tenant_quotas`` (JSON) overrides them per tenant
    max_update_bytes: int = Field(default=8 << 20, gt=0)
    max_doc_bytes: int = Field(default=256 << 20, gt=0)
    updates_per_second: float = Field(allow_inf_nan=False, default=500.0, gt=0)
    updates_burst: int = Field(default=2000, gt=0)
    max_connections: int = Field(default=1000, gt=0)
    rate_max_wait_seconds: float = Field(allow_inf_nan=False, default=5.0, ge=0)
    tenant_quotas: dict[str, QuotaOverride] = Field(default_factory=dict)

    # connections and rooms
    max_message_bytes: int = Field(default=16 << 20, gt=0)  # a message of this size is taken
    send_queue_frames: int = Field(default=4096, gt=0)  # >= commit_max_updates (below)
    send_queue_bytes: int = Field(default=32 << 20, gt=0)
    max_inflight_updates: int = Field(default=256, gt=0)
    heartbeat_seconds: float = Field(allow_inf_nan=False, default=30.0, gt=0)
    # How long a connection may stay open without a request in progress: before its
    # first request (a client that never finishes its handshake) and between two
    # (HTTP keep-alive). aiohttp's own default (3.14) is 3,630 s.
    keepalive_seconds: float = Field(allow_inf_nan=False, default=75.0, gt=0)
    room_idle_seconds: float = Field(allow_inf_nan=False, default=30.0, ge=0)
    max_idle_rooms: int = Field(default=1000, ge=0)

    # group commit and snapshots
    # Updates per group commit at most. 4000 rather than 1000: at full speed (bench.fanout
    # 50x4x200) weft delivered 79-87k updates/s against 61-77k, fewer fsyncs and
    # per-batch costs (2026-12-05, alternating runs); 250 gave 62-65k.
    commit_max_updates: int = Field(default=4000, gt=0)
    commit_max_bytes: int = Field(default=4 << 20, gt=0)
    snapshot_every: int = Field(default=1000, gt=0)
    snapshot_bytes: int = Field(default=4 << 20, gt=0)

    drain_seconds: float = Field(allow_inf_nan=False, default=10.0, ge=0)
    # The longest a refused standard client's connection is held before its close frame
    # (server.backoff: y-websocket reconnects 100 ms after every refusal); 0: no hold.
    refusal_hold_seconds: float = Field(allow_inf_nan=False, default=10.0, ge=0, le=60)
    # An edit against a deletion: bring the document back (unset weft.deleted), or only
    # record the conflict (default). Off by default: a device's base can lag behind what
    # it has seen (it moves by probes), and a deletion judged on such a base against an
    # edit the deleter had seen brought the file back (found under load in CI).
    bring_back_edited: bool = False
    log_level: str = "INFO"
    instance: str = ""  # none given: a random name (see _unique_instance)
    # The event loop: uvloop when installed (a dependency but on Windows), else
    # asyncio's own; "auto" becomes the one that runs. uvloop delivered ~3 % more
    # updates/s for ~3 % less CPU at 50x4x200 (README, Benchmarks).
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    @field_validator("public_key")
    @classmethod
    def _read_key_file(cls, value: str | None) -> str | None:
        """Accept the PEM text itself or the path of a file holding it, once it is known
        to hold an RSA or EC P-256 public key (``server.auth.verifying_key``): a file
        that is not PEM, or an Ed25519 key, started a server that answered every token
        with a 500 or a garbled 401."""
        if value is None:
            return value
        if value.lstrip().startswith("-----BEGIN") or is_ssh_key_line(value):
            pem, where = value, ""
        else:
            path = Path(value).expanduser()
            if not path.is_file():
                raise ValueError(
                    "public_key is neither PEM or OpenSSH key text nor a readable file"
                    + (f": {value}" if _reads_as_path(value) else f" ({_unshown(value)})")
                )
            pem, where = path.read_bytes().decode("utf-8", "surrogateescape"), f"{value}: "
        try:
            verifying_key(pem)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
        return pem

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        """An empty host (``WEFT_HOST=`` from an unset shell variable, say) is an error,
        as an empty store or secret is: aiohttp took it for every interface, IPv4 and
        IPv6, and without auth the refusal named no address ("listen on  without auth")."""
        if not value.strip():
            raise ValueError("host is empty: give an address (0.0.0.0: every interface)")
        return value

    @field_validator("secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty secret (``WEFT_SECRET=`` from an unset shell variable, say) is an
        error, not "auth off": it used to pass the loopback check as a secret, then
        leave every caller unauthenticated."""
        if value is not None:
            check_secret(value.get_secret_value())  # empty or under 32 bytes: refused
        return value

    @field_validator("jwt_leeway_seconds")
    @classmethod
    def _leeway(cls, value: float) -> float:
        """A finite number of seconds, at most a day: ``inf`` (or ``1e12``) was taken,
        and then every expired token was accepted."""
        if not 0 <= value <= MAX_LEEWAY_SECONDS:  # NaN compares false: refused too
            raise ValueError(
                f"must be a number of seconds from 0 to {MAX_LEEWAY_SECONDS} (a day), not "
                f"{value}: it is the clock skew tolerated on a token's exp and nbf"
            )
        return value

    @field_validator("instance")
    @classmethod
    def _unique_instance(cls, value: str) -> str:
        """A name given (``WEFT_INSTANCE``) labels the instance: a random part is added,
        as every instance on a store needs a name of its own. Two processes given one
        name took each other's commits for their own (neither's rooms applied the
        other's edits) and counted as one instance. No ``/``: a session id is the
        instance, ``/``, the connection. None given (the default, or empty): a random
        name alone (settings validate their defaults too: a default drawn at random was
        given a second random part)."""
        if not value:
            return secrets.token_hex(4)
        if not INSTANCE_LABEL.fullmatch(value):
            raise ValueError("instance must be 1-32 of A-Z a-z 0-9 . _ -")
        return f"{value}-{secrets.token_hex(4)}"

    @field_validator("event_loop")
    @classmethod
    def _loop_installed(cls, value: str) -> str:
        """``uvloop`` asked for must be installed; ``auto`` becomes the one that will
        run."""
        installed = importlib.util.find_spec("uvloop") is not None
        if value == "uvloop" and not installed:
            raise ValueError("uvloop is not installed (pip install uvloop), or use asyncio")
        if value == "auto":
            return "uvloop" if installed else "asyncio"
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @model_validator(mode="after")
    def _auth_or_loopback(self) -> Settings:
        if not self.auth_enabled and not self.insecure and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without auth: set WEFT_SECRET (or "
                "--secret / --public-key), listen on 127.0.0.1, or pass --insecure"
            )
        limits = {"WEFT_MAX_UPDATE_BYTES": self.max_update_bytes} | {
            f"WEFT_TENANT_QUOTAS: tenant {tenant}: max_update_bytes": quota.max_update_bytes
            for tenant, quota in self.tenant_quotas.items()
            if quota.max_update_bytes is not None
        }
        for where, limit in limits.items():
            if limit > self.max_message_bytes:
                raise ValueError(
                    f"{where} ({limit}) must not exceed WEFT_MAX_MESSAGE_BYTES "
                    f"({self.max_message_bytes})"
                )
            if limit > MAX_UPDATE_BYTES:
                raise ValueError(
                    f"{where} ({limit}) must not exceed {MAX_UPDATE_BYTES} (one transaction)"
                )
        # One group commit may resolve a whole batch for one room at once: a peer's send
        # queue must hold such a burst, or healthy peers would count as slow readers.
        if self.send_queue_frames < self.commit_max_updates:
            raise ValueError(
                f"WEFT_SEND_QUEUE_FRAMES ({self.send_queue_frames}) must be at least "
                f"WEFT_COMMIT_MAX_UPDATES ({self.commit_max_updates}): a peer's queue holds "
                "one group commit's burst"
            )
        if self.send_queue_bytes < self.commit_max_bytes:
            raise ValueError(
                f"WEFT_SEND_QUEUE_BYTES ({self.send_queue_bytes}) must be at least "
                f"WEFT_COMMIT_MAX_BYTES ({self.commit_max_bytes}): a peer's queue holds "
                "one group commit's burst"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return self.secret is not None or self.public_key is not None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
