"""Real clamd and rspamd for the filter tests, started once per test session.

A pytest plugin (`pytest_plugins = ["filter_daemons"]` in the test modules):

- `filter_env`: a temp dir the daemons' users (`clamav`, `_rspamd`) can traverse, a
  tiny ClamAV signature database made here, and a DNS server on 127.0.0.1 that
  answers NXDOMAIN to everything, so rspamd's scores do not depend on the network;
- `clamd`: muninet's `Clamd` from the rendered clamd.conf, on a unix socket and a
  free 127.0.0.1 TCP port, with StreamMaxLength 1M;
- `rspamd`: muninet's `Rspamd`; its compiled rules (DBDIR) are kept between test
  runs in $TEST_RSPAMD_CACHE (default /var/tmp/muninet-test-cache/rspamd-db), so only
  the first run pays the ~10 s rule compilation.

Neither the EICAR nor the GTUBE string appears whole in this file, so no scanner
flags the source tree; they are assembled at run time.

PYTEST_DONT_REWRITE: the test modules import helpers from here before pytest loads
it as a plugin, and it has no asserts worth rewriting.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from mailhost.filter_daemons import Clamd, Rspamd, clamd_binary, rspamd_binary
from mailhost.filters.base import MessageInfo
from provisioning.render_filters import RSPAMD_USER, ClamdFiles, RspamdFiles
from provisioning.settings import Settings, load_settings

from conftest import free_port, missing
from dns_server import DnsServer

CLAM_EXE = Path("/usr/share/clamav-testfiles/clam.exe")
CLAM_ZIP = Path("/usr/share/clamav-testfiles/clam.zip")
# Joined at run time (a literal `a + b` would be folded into one constant in the .pyc).
EICAR = b"".join((b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"))
GTUBE = b"".join((b"XJS*C4JDBQADN1.NSBN3*2IDNEN*", b"GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"))
EICAR_SIGNATURE = "Muninet.Test.EICAR.UNOFFICIAL"  # clamd adds .UNOFFICIAL to custom ones
CLAM_EXE_SIGNATURE = "Muninet.Test.ClamExe.UNOFFICIAL"
CLAMD_STREAM_MAX = 1024 * 1024
# The sending office's server: forward-confirmed reverse DNS, an MX. CLIENT_NO_RDNS has no PTR.
CLIENT_IP, CLIENT_HOST, CLIENT_NO_RDNS = "203.0.113.25", "mail.gmina-przyklad.pl", "203.0.113.99"
ZONE = {
    "gmina-przyklad.pl": [("MX", f"10 {CLIENT_HOST}."), ("A", CLIENT_IP)],
    CLIENT_HOST: [("A", CLIENT_IP)],
    "25.113.0.203.in-addr.arpa": [("PTR", f"{CLIENT_HOST}.")],
}
RSPAMD_CACHE = Path(os.environ.get("TEST_RSPAMD_CACHE", "/var/tmp/muninet-test-cache/rspamd-db"))


def write_test_signatures(directory: Path) -> Path:
    """A ClamAV database with two signatures: EICAR (.ndb) and clam.exe's MD5 (.hdb)."""
    if not CLAM_EXE.exists():
        missing("clamav-testfiles (/usr/share/clamav-testfiles/clam.exe)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "muninet-test.ndb").write_text(f"Muninet.Test.EICAR:0:*:{EICAR.hex()}\n")
    exe = CLAM_EXE.read_bytes()
    (directory / "muninet-test.hdb").write_text(
        f"{hashlib.md5(exe).hexdigest()}:{len(exe)}:Muninet.Test.ClamExe\n"
    )
    for path in (directory, *directory.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return directory


@dataclass
class FilterEnv:
    root: Path
    env: dict[str, str]

    def settings(self, **overrides: str) -> Settings:
        """Settings for this session, e.g. `settings(antivirus__on_error="accept")`."""
        extra = {f"MUNINET_{key.upper()}": value for key, value in overrides.items()}
        return load_settings({**self.env, **extra})


@pytest.fixture(scope="session")
def filter_env() -> Iterator[FilterEnv]:
    root = Path(tempfile.mkdtemp(prefix="muninet-filters-", dir="/tmp"))
    root.chmod(0o711)  # the daemons' users must traverse it (pytest's tmp dirs are 0700)
    dns = DnsServer(ZONE).start()  # NXDOMAIN for every other name: nothing leaves the machine
    env = {
        "MUNINET_PATHS__STATE_DIR": str(root / "state"),
        "MUNINET_ANTIVIRUS__DATABASE_DIR": str(root / "signatures"),  # see start_clamd
        "MUNINET_ANTIVIRUS__MAX_STREAM_SIZE": str(CLAMD_STREAM_MAX),
        "MUNINET_ANTIVIRUS__TIMEOUT": "10s",
        "MUNINET_SPAM__TIMEOUT": "10s",
        "MUNINET_DNS__NAMESERVERS": "127.0.0.1",
        "MUNINET_DNS__PORT": str(dns.port),
    }
    try:
        yield FilterEnv(root, env)
    finally:
        dns.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RunningClamd:
    files: ClamdFiles
    tcp_address: str

    @property
    def socket(self) -> str:
        return str(self.files.socket)


def start_clamd(settings: Settings, tcp_port: int | None = None) -> Clamd:
    """muninet's Clamd with the test signatures in `antivirus.database_dir`."""
    if clamd_binary() is None:
        missing("clamd (clamav-daemon)")
    write_test_signatures(Path(settings.antivirus.database_dir))
    daemon = Clamd(settings, tcp_port=tcp_port)
    daemon.start(timeout=60)
    return daemon


@pytest.fixture(scope="session")
def clamd(filter_env: FilterEnv) -> Iterator[RunningClamd]:
    port = free_port()
    daemon = start_clamd(filter_env.settings(), tcp_port=port)
    assert daemon.files is not None
    try:
        yield RunningClamd(daemon.files, f"127.0.0.1:{port}")
    finally:
        daemon.stop()


def _copy_rules(source: Path, target: Path, owner: str | None) -> None:
    """Compiled rule files (*.hs*) from one DBDIR to another, owned by the daemon's user."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.hs*"):
        copy = target / path.name
        shutil.copyfile(path, copy)
        if owner is not None:
            shutil.chown(copy, owner, owner)


@pytest.fixture(scope="session")
def rspamd(filter_env: FilterEnv) -> Iterator[RspamdFiles]:
    if rspamd_binary() is None:
        missing("rspamd")
    owner = RSPAMD_USER if os.geteuid() == 0 else None
    db_dir = filter_env.settings().state_dir / "rspamd" / "db"
    if RSPAMD_CACHE.is_dir():
        _copy_rules(RSPAMD_CACHE, db_dir, owner)
    daemon = Rspamd(filter_env.settings())
    files = daemon.start(timeout=120)
    try:
        yield files
    finally:
        daemon.stop()
        # Keep what rspamd compiled for the next run (written to a new dir, then swapped).
        compiled = {path.name for path in files.db_dir.glob("*.hs*")}
        cached = {path.name for path in RSPAMD_CACHE.glob("*.hs*")}
        if any(name.endswith(".hs") for name in compiled) and not compiled <= cached:
            fresh = RSPAMD_CACHE.with_name(f"{RSPAMD_CACHE.name}.{os.getpid()}")
            shutil.rmtree(fresh, ignore_errors=True)
            _copy_rules(files.db_dir, fresh, None)
            old = RSPAMD_CACHE.with_name(f"{RSPAMD_CACHE.name}.old.{os.getpid()}")
            if RSPAMD_CACHE.exists():
                RSPAMD_CACHE.rename(old)
            fresh.rename(RSPAMD_CACHE)
            shutil.rmtree(old, ignore_errors=True)


# -- messages -----------------------------------------------------------------------------


def plain_message(body: str | bytes, subject: str = "Meeting on Tuesday", **headers: str) -> bytes:
    """A simple RFC 5322 message with CRLF line endings."""
    fields = {
        "From": "Anna Nowak <anna.nowak@gmina-przyklad.pl>",
        "To": "sekretariat@info.association.pl",
        "Subject": subject,
        "Date": "Sat, 21 Nov 2026 10:00:00 +0100",
        "Message-ID": "<20261121100000.1@gmina-przyklad.pl>",
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=utf-8",
        **{name.replace("_", "-"): value for name, value in headers.items()},
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode()
    text = body if isinstance(body, bytes) else body.encode()
    text = text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return head + b"\r\n" + text + (b"" if text.endswith(b"\r\n") else b"\r\n")


def attachment_message(
    filename: str, content: bytes, mime: str = "application/octet-stream"
) -> bytes:
    """A multipart message with `content` as a base64 attachment."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "anna.nowak@gmina-przyklad.pl"
    msg["To"] = "sekretariat@info.association.pl"
    msg["Subject"] = "Documents for the council"
    msg.set_content("Please find the documents attached.\n")
    maintype, _, subtype = mime.partition("/")
    msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def zipped(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def info(data: bytes, **changes: object) -> MessageInfo:
    """The envelope of a message from an outside server to a hosted mailbox."""
    fields: dict[str, object] = {
        "data": data,
        "mail_from": "anna.nowak@gmina-przyklad.pl",
        "recipients": ["sekretariat@info.association.pl"],
        "recipient_domains": ["info.association.pl"],
        "client_ip": CLIENT_IP,
        "helo": CLIENT_HOST,
        "auth_user": None,
    }
    fields.update(changes)
    return MessageInfo(**fields)  # type: ignore[arg-type]
