"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL.

PostgreSQL is a private cluster this fixture starts on 127.0.0.1 and a free high
port (initdb from Debian's postgresql package), or the server named by
TEST_POSTGRES_URL. In CI (CI=true) a missing PostgreSQL or Dovecot tool
fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
import pytest

from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings, load_settings

# Helper modules that test modules import and also load as plugins (pytest_plugins):
# marked before any test module imports them, so that their asserts are rewritten
# and pytest does not warn that it found them already imported.
pytest.register_assert_rewrite("web", "filter_daemons")

IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ["sqlite", "postgresql"]
# Cheap hashing for tests; production costs are in config/muninet.toml.
FAST_HASHING = {
    "MUNINET_PASSWORDS__ARGON2_MEMORY_KIB": "1024",
    "MUNINET_PASSWORDS__ARGON2_TIME_COST": "1",
    "MUNINET_PASSWORDS__BCRYPT_ROUNDS": "4",
    "MUNINET_PASSWORDS__SHA512_ROUNDS": "1000",
}


def missing(what: str) -> None:
    """A required real component is absent: fail in CI, skip on a developer's machine."""
    message = f"{what} is not installed (run ./scripts/test, which installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        missing(name)
    assert path is not None
    return path


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A free 127.0.0.1 port not handed out before in this run.

    The kernel may offer the same ephemeral port twice in a row; two servers given
    one port would share it silently under SO_REUSEPORT.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextmanager
def _private_postgres() -> Iterator[str]:
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not postgres:
        missing("PostgreSQL server (initdb, postgres)")
    assert initdb and postgres
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    workdir = Path(tempfile.mkdtemp(prefix="muninet-pg-"))
    data = workdir / "data"
    if as_root:
        shutil.chown(workdir, "postgres")
    subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = open(workdir / "postgres.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            *prefix,
            postgres,
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(workdir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(url, connect_timeout=1).close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "private PostgreSQL did not start: "
                        + (workdir / "postgres.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A libpq URL with rights to create databases."""
    if url := os.environ.get("TEST_POSTGRES_URL"):
        yield url
        return
    with _private_postgres() as url:
        yield url


def _sqlalchemy_url(libpq_url: str, dbname: str) -> str:
    base = libpq_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


class PostgresDatabases:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.counter = 0

    def _execute(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def create(self, template: str | None = None) -> tuple[str, str]:
        self.counter += 1
        name = f"muninet_test_{os.getpid()}_{self.counter}"
        clause = f" TEMPLATE {template}" if template else ""
        self._execute(f'CREATE DATABASE "{name}"{clause}')
        return name, _sqlalchemy_url(self.admin_url, name)

    def drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> PostgresDatabases:
    return PostgresDatabases(request.getfixturevalue("postgres_admin_url"))


@pytest.fixture(scope="session")
def template_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "muninet.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.dispose()
    return path


@pytest.fixture(scope="session")
def template_postgres(postgres: PostgresDatabases) -> str:
    name, url = postgres.create()
    database = Database(url)
    database.upgrade()
    database.dispose()
    return name


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    if backend == "sqlite":
        path = tmp_path / "state" / "muninet.db"
        path.parent.mkdir()
        shutil.copy(request.getfixturevalue("template_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    pg: PostgresDatabases = request.getfixturevalue("postgres")
    name, url = pg.create(template=request.getfixturevalue("template_postgres"))
    yield url
    pg.drop(name)


@pytest.fixture
def empty_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A database with no schema at all."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty' / 'muninet.db'}"
        return
    pg: PostgresDatabases = request.getfixturevalue("postgres")
    name, url = pg.create()
    yield url
    pg.drop(name)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The MUNINET_* variables that point muninet at this test's state and database."""
    return {
        "MUNINET_PATHS__STATE_DIR": str(tmp_path / "state"),
        "MUNINET_DATABASE__URL": database_url,
        **FAST_HASHING,
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings)
    yield database
    database.dispose()


@pytest.fixture
def unit(db: Database, settings: Settings) -> Callable[[], AbstractContextManager[ServiceContext]]:
    """`with unit() as ctx:` one committed unit of work, as a face would run it."""

    @contextmanager
    def _unit() -> Iterator[ServiceContext]:
        with db.transaction() as session:
            yield ServiceContext(session=session, actor=Actor("cli", "test"), settings=settings)

    return _unit


MUNINET = Path(sys.executable).parent / "muninet"


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed `muninet` command against this test's database."""
    if not MUNINET.exists():
        pytest.fail(f"{MUNINET} is missing: install the project (pip install -e .)")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")}

    def run(
        *args: str, input: str | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MUNINET), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**base_env, **env, **(extra_env or {})},
            timeout=120,
            check=False,
        )

    return run
