"""One typed settings object, read from config/muninet.toml, MUNINET_CONFIG and the environment.

Precedence: environment (MUNINET_<SECTION>__<KEY>) > the file named by
MUNINET_CONFIG > config/muninet.toml. Unknown keys are errors, not silently
ignored: a typo in a production file must not fall back to a dev default.
"""

from __future__ import annotations

import json
import os
import pwd
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from provisioning.durations import parse_duration
from provisioning.errors import ConfigError, MuninetError
from provisioning.sizes import parse_size

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULTS_FILE = CONFIG_DIR / "muninet.toml"
ENV_PREFIX = "MUNINET_"
CONFIG_ENV = "MUNINET_CONFIG"


def _size(value: Any) -> int:
    try:
        return parse_size(value)
    except MuninetError as exc:
        raise ValueError(str(exc)) from exc


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except MuninetError as exc:
        raise ValueError(str(exc)) from exc


ByteSize = Annotated[int, BeforeValidator(_size)]
Seconds = Annotated[float, BeforeValidator(_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathSettings(_Section):
    state_dir: Path


class DatabaseSettings(_Section):
    url: str
    sqlite_busy_timeout_ms: int = Field(ge=0)
    echo: bool


class ListenSettings(_Section):
    address: str
    smtp_port: Port
    submission_port: Port
    smtps_port: Port
    imap_port: Port
    imaps_port: Port
    admin_port: Port
    radius_auth_port: Port
    radius_acct_port: Port
    local_port: Port

    @model_validator(mode="after")
    def _ports_distinct(self) -> ListenSettings:
        """Two servers on one port would share it silently (SO_REUSEPORT), not fail."""
        ports = {name: value for name, value in self.__dict__.items() if name.endswith("_port")}
        seen: dict[int, str] = {}
        for name, value in ports.items():
            if value in seen:
                raise ValueError(f"{seen[value]} and {name} are both {value}")
            seen[value] = name
        return self


class AssociationSettings(_Section):
    name: str
    hostname: str


class PasswordSettings(_Section):
    scheme: Literal["argon2id", "bcrypt", "sha512-crypt"]
    min_length: int = Field(ge=1)
    argon2_time_cost: int = Field(ge=1)
    argon2_memory_kib: int = Field(ge=8)
    argon2_parallelism: Literal[1]
    bcrypt_rounds: int = Field(ge=4, le=31)
    sha512_rounds: int = Field(ge=1000, le=999_999_999)


class DefaultSettings(_Section):
    mailbox_quota: ByteSize
    member_max_mailboxes: int = Field(ge=0)
    member_mail_quota: ByteSize
    member_max_lines: int = Field(ge=0)


class SmtpSettings(_Section):
    max_message_size: ByteSize
    max_recipients: int = Field(ge=1)
    max_received_headers: int = Field(ge=1)
    max_connections_per_ip: int = Field(ge=1)
    command_timeout: Seconds
    tls_cert: str
    tls_key: str
    workers: int = Field(ge=0)
    durability: Literal["syncfs", "fsync"]
    lookup_cache: Seconds


class SubmissionSettings(_Section):
    auth_failures_per_network: int = Field(ge=1)
    auth_failures_per_account: int = Field(ge=1)
    auth_window: Seconds
    messages_per_hour: int = Field(ge=1)


class DeliverySettings(_Section):
    method: Literal["maildir", "lmtp"]
    maildir_root: str
    mail_user: str
    lmtp_socket: str


class QueueSettings(_Section):
    retry_schedule: list[Seconds] = Field(min_length=1)
    max_age: Seconds
    scan_interval: Seconds
    timeout: Seconds
    max_parallel: int = Field(ge=1)


class RelaySettings(_Section):
    smarthost: str
    sender_domain_smarthosts: list[str]
    username: str
    password: str
    require_tls: bool


class DnsSettings(_Section):
    nameservers: list[str]
    port: Port
    timeout: Seconds


class SenderAuthSettings(_Section):
    enabled: bool
    reject_dmarc: bool
    quarantine_to_junk: bool


class DnsblSettings(_Section):
    zones: list[str]
    client_zones: list[str]
    client_timeout: Seconds = Field(gt=0)
    client_cache: Seconds = Field(ge=0)
    check_loopback: bool


class AdminSettings(_Section):
    secret_key: str
    insecure_cookies: bool
    trusted_proxies: int = Field(ge=0)
    session_idle_minutes: int = Field(ge=1)
    session_hours: int = Field(ge=1)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class AntivirusSettings(_Section):
    enabled: bool
    address: str
    database_dir: str
    timeout: Seconds = Field(gt=0)
    on_error: Literal["tempfail", "accept"]
    max_stream_size: ByteSize = Field(ge=1)
    on_oversize: Literal["skip", "tempfail", "reject"]
    max_parallel: int = Field(ge=1)
    quarantine: bool


class SpamSettings(_Section):
    enabled: bool
    address: str
    timeout: Seconds = Field(gt=0)
    on_error: Literal["accept", "tempfail"]
    add_header_score: float
    reject_score: float
    max_size: ByteSize = Field(ge=1)
    quarantine: bool

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> SpamSettings:
        if self.add_header_score > self.reject_score:
            raise ValueError("add_header_score must not be above reject_score")
        return self


class Settings(_Section):
    paths: PathSettings
    database: DatabaseSettings
    listen: ListenSettings
    association: AssociationSettings
    passwords: PasswordSettings
    defaults: DefaultSettings
    smtp: SmtpSettings
    submission: SubmissionSettings
    delivery: DeliverySettings
    queue: QueueSettings
    relay: RelaySettings
    dns: DnsSettings
    sender_auth: SenderAuthSettings
    dnsbl: DnsblSettings
    admin: AdminSettings
    logging: LoggingSettings
    antivirus: AntivirusSettings
    spam: SpamSettings

    @property
    def state_dir(self) -> Path:
        return self.paths.state_dir.expanduser().resolve()

    @property
    def mail_user(self) -> str:
        """Owner of delivered mail: the configured user; else vmail for root, or ourselves."""
        if self.delivery.mail_user:
            return self.delivery.mail_user
        return "vmail" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def mail_owner(self) -> tuple[int, int]:
        """(uid, gid) of the mail user, or a clear ConfigError if it does not exist."""
        try:
            entry = pwd.getpwnam(self.mail_user)
        except KeyError:
            raise ConfigError(
                f"the mail user {self.mail_user!r} does not exist: create it "
                "(scripts/setup does) or set delivery.mail_user"
            ) from None
        return entry.pw_uid, entry.pw_gid

    @property
    def maildir_root(self) -> Path:
        root = self.delivery.maildir_root
        return Path(root).expanduser().resolve() if root else self.state_dir / "mail"

    @property
    def lmtp_socket(self) -> Path:
        """Dovecot's LMTP socket: as configured, or where muninet's rendered Dovecot puts it."""
        path = self.delivery.lmtp_socket
        return Path(path) if path else self.state_dir / "dovecot" / "run" / "lmtp"

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite file in the state directory."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.state_dir / 'muninet.db'}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"settings file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from exc


def _merge(base: dict[str, Any], override: Mapping[str, Any], origin: str) -> None:
    for key, value in override.items():
        if isinstance(value, Mapping):
            section = base.get(key)
            if not isinstance(section, dict):
                raise ConfigError(f"{origin}: unknown settings section [{key}]")
            _merge(section, value, origin)
        else:
            if key not in base:
                raise ConfigError(f"{origin}: unknown setting {key!r}")
            if isinstance(base[key], list) and isinstance(value, str):
                base[key] = _parse_list(value, origin, key)
            else:
                base[key] = value


def _parse_list(text: str, origin: str, key: str) -> list[Any]:
    """A list from the environment: JSON (`["a", "b"]`) or comma-separated (`a, b`)."""
    if text.strip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{origin}: {key} is not a JSON list: {exc}") from exc
        if not isinstance(value, list):
            raise ConfigError(f"{origin}: {key} must be a list")
        return value
    return [item.strip() for item in text.split(",") if item.strip()]


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        section, sep, key = name[len(ENV_PREFIX) :].partition("__")
        if not sep or not key:
            raise ConfigError(f"{name}: expected MUNINET_<SECTION>__<KEY>")
        overrides.setdefault(section.lower(), {})[key.lower()] = value
    return overrides


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the defaults file, MUNINET_CONFIG and the environment."""
    environ = os.environ if environ is None else environ
    data = _read_toml(DEFAULTS_FILE)
    if config_file := environ.get(CONFIG_ENV):
        _merge(data, _read_toml(Path(config_file)), config_file)
    _merge(data, _env_overrides(environ), "environment")
    try:
        return Settings.model_validate(data)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
