"""Node settings in layers: defaults (this dataclass), then a TOML file, then ``IDRESOLVE_*`` environment
variables, then command-line flags that were actually given. Nothing is read at import time.

Secrets (``admin_secret``) never appear in ``repr`` or logs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting is missing, malformed or contradicts another. The message says which and why."""


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``127.0.0.1:8000``, ``[::1]:8000``, ``:8000`` or ``host`` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"bad address {text!r}: port must be a number") from None
    if not 0 <= port < 65536:
        raise ConfigError(f"bad address {text!r}: port out of range")
    return host or "127.0.0.1", port


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str = "node"
    prefixes: tuple[str, ...] = ()
    http: str = "127.0.0.1:8000"
    tcp: str | None = None  # binary protocol, e.g. 127.0.0.1:2641
    udp: str | None = None
    handle: str | None = None  # the native Handle protocol, TCP and UDP on one port, e.g. 127.0.0.1:2641
    data_dir: Path = Path("./data")
    store: str = "sqlite"  # sqlite (durable) or memory
    fsync: bool = False
    admin_secret: str | None = field(default=None, repr=False)
    plain_http_writes: bool | None = None  # None: allowed on loopback only
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: str = "INFO"
    access_log: bool = False
    shed_lag_ms: str = "50"  # shed load when the event loop lags this much for 100 ms; 0 turns shedding off
    http_idle_timeout_s: float = 30.0  # HTTP connections idle (or a request body not complete) this long close
    #: binary TCP addresses (host:port) where fetching a template this node does not hold starts: a
    #: top-level node (the walk follows referrals), a recursive node, or the node that holds the template
    template_resolvers: tuple[str, ...] = ()
    #: worker processes sharing the ports and the store (runtime/workers.py); 0: one per core with the
    #: sqlite store, one with the memory store (which processes cannot share)
    workers: int = 0

    def worker_count(self, cores: int) -> int:
        if self.store == "memory":
            return 1
        return self.workers or cores

    def writes_over_plain_http(self) -> bool:
        if self.plain_http_writes is not None:
            return self.plain_http_writes
        return is_loopback(parse_hostport(self.http, 8000)[0])

    def writes_over_binary(self) -> bool:
        """Whether the binary listeners (msgpack and native) take credentials and writes: on loopback, or
        when plain-text writes were explicitly allowed (a private network); neither protocol has TLS."""
        if self.plain_http_writes is not None:
            return self.plain_http_writes
        return all(is_loopback(parse_hostport(a, 2641)[0]) for a in (self.tcp, self.udp, self.handle) if a is not None)


MAX_WORKERS = 64
_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    text_kind = str(kind)
    if raw is None:
        return None
    if "tuple" in text_kind:
        if isinstance(raw, str):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if isinstance(raw, list | tuple):
            return tuple(str(p) for p in raw)
        raise ConfigError(f"{name} must be a list")
    if "bool" in text_kind:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in _BOOL_TRUE:
            return True
        if str(raw).lower() in _BOOL_FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, not {raw!r}")
    if "Path" in text_kind:
        return Path(str(raw))
    if "float" in text_kind:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, not {raw!r}") from None
        if not 0 < value < float("inf"):
            raise ConfigError(f"{name} must be a positive number of seconds, not {raw!r}")
        return value
    if kind == "int" or text_kind == "<class 'int'>":
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
        if not 0 <= number <= MAX_WORKERS:
            raise ConfigError(f"{name} must be between 0 and {MAX_WORKERS}, not {raw!r}")
        return number
    return str(raw)


def load_node_config(*, toml_path: Path | None = None, env: Mapping[str, str] | None = None,
                     flags: Mapping[str, Any] | None = None, base: NodeConfig | None = None) -> NodeConfig:
    cfg = base or NodeConfig()
    known = {f.name: f.type for f in fields(NodeConfig)}
    layers: list[tuple[str, dict[str, Any]]] = []
    if toml_path is not None:
        try:
            data = tomllib.loads(Path(toml_path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {toml_path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {toml_path} is not valid TOML: {exc}") from None
        section = data.get("node", data)
        unknown = set(section) - set(known)
        if unknown:
            raise ConfigError(f"unknown settings in {toml_path}: {', '.join(sorted(unknown))}")
        layers.append((str(toml_path), dict(section)))
    env = os.environ if env is None else env
    from_env = {name: env[f"IDRESOLVE_{name.upper()}"] for name in known if f"IDRESOLVE_{name.upper()}" in env}
    layers.append(("environment", from_env))
    layers.append(("flags", {k: v for k, v in (flags or {}).items() if v is not None and k in known}))
    for _source, values in layers:
        cfg = replace(cfg, **{k: _coerce(k, v, known[k]) for k, v in values.items()})
    if not cfg.prefixes:
        raise ConfigError("a node needs at least one prefix (--prefix 88.100)")
    if cfg.store not in ("sqlite", "memory"):
        raise ConfigError(f"store must be sqlite or memory, not {cfg.store!r}")
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("TLS needs both tls_cert and tls_key")
    if cfg.store == "memory" and cfg.workers > 1:
        raise ConfigError("several workers need the sqlite store: processes cannot share a memory store")
    return cfg
