"""Settings: defaults, the MUNINET_CONFIG file, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.errors import ConfigError, ValidationError
from provisioning.settings import load_settings
from provisioning.sizes import format_size, parse_size


def test_defaults_are_the_dev_defaults() -> None:
    settings = load_settings({})
    listen = settings.listen
    assert listen.address == "127.0.0.1"
    assert (listen.smtp_port, listen.submission_port, listen.smtps_port) == (2525, 2587, 2465)
    assert (listen.imap_port, listen.imaps_port, listen.admin_port) == (2143, 2993, 8080)
    assert (listen.radius_auth_port, listen.radius_acct_port) == (11812, 11813)
    assert settings.state_dir == (Path.cwd() / "var").resolve()
    assert settings.database_url == f"sqlite:///{settings.state_dir / 'muninet.db'}"
    assert settings.passwords.scheme == "argon2id"
    assert settings.defaults.mailbox_quota == 1024**3


def test_config_file_then_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "muninet.toml"
    config.write_text(
        '[paths]\nstate_dir = "/var/lib/muninet"\n[listen]\nsmtp_port = 25\nimap_port = 143\n'
        '[defaults]\nmailbox_quota = "2G"\n'
    )
    settings = load_settings({"MUNINET_CONFIG": str(config), "MUNINET_LISTEN__SMTP_PORT": "2526"})
    assert settings.state_dir == Path("/var/lib/muninet")
    assert settings.listen.smtp_port == 2526  # environment wins over the file
    assert settings.listen.imap_port == 143  # the file wins over the defaults
    assert settings.defaults.mailbox_quota == 2 * 1024**3


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MUNINET_LISTEN__SMTP_PROT": "25"}, "unknown setting 'smtp_prot'"),
        ({"MUNINET_NOPE__X": "1"}, "unknown settings section [nope]"),
        ({"MUNINET_LISTEN": "1"}, "expected MUNINET_<SECTION>__<KEY>"),
        ({"MUNINET_LISTEN__SMTP_PORT": "many"}, "listen.smtp_port"),
        ({"MUNINET_LISTEN__SMTP_PORT": "70000"}, "listen.smtp_port"),
        ({"MUNINET_PASSWORDS__SCHEME": "md5"}, "passwords.scheme"),
        ({"MUNINET_DEFAULTS__MAILBOX_QUOTA": "lots"}, "defaults.mailbox_quota"),
        ({"MUNINET_CONFIG": "/nonexistent/muninet.toml"}, "settings file not found"),
    ],
)
def test_bad_settings_are_refused_clearly(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(environ)
    assert message in str(info.value)


def test_invalid_toml_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[listen\nsmtp_port = 25\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"MUNINET_CONFIG": str(config)})


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("10G", 10 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5G", 1536 * 1024**2),
        ("2gb", 2 * 1024**3),
        ("100K", 102400),
        (5, 5),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "ten", "1X"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_size(text)


@pytest.mark.parametrize("size", [1, 1000, 1024, 1000**3, 10 * 1024**3, 1536 * 1024**2])
def test_exact_size_format_round_trips(size: int) -> None:
    assert parse_size(format_size(size, exact=True)) == size


def test_two_servers_cannot_share_a_port() -> None:
    with pytest.raises(ConfigError, match="smtp_port and local_port are both 2525"):
        load_settings({"MUNINET_LISTEN__LOCAL_PORT": "2525"})
