"""Languages of the web admin: English, Polish and Bulgarian (Flask-Babel).

The catalogues are the `.po` files in `admin_ui/translations`; they are compiled to
`.mo` at app start into `<state_dir>/admin-ui/translations` (only when a `.po` is newer),
so a fresh clone needs no build step and the source tree may be read-only.
The language comes from the switch (kept in the session), else from Accept-Language.
The services' refusals are English %-templates with parameters (provisioning.errors);
`error_text` shows them in the page's language (their msgids are extracted by the class
names, see babel.cfg).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, session
from flask import request as flask_request
from flask_babel import Babel, format_datetime, format_decimal, gettext

from provisioning.errors import MuninetError, Term

SOURCE = Path(__file__).resolve().parent / "translations"
LANGUAGES = {"en": "English", "pl": "Polski", "bg": "Български"}
DEFAULT = "en"


def compile_catalogues(target: Path) -> Path:
    """Compile every translations/<lang>/LC_MESSAGES/*.po into target; returns target."""
    for po in sorted(SOURCE.glob("*/LC_MESSAGES/*.po")):
        mo = target / po.relative_to(SOURCE).with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as handle:
            catalog = read_po(handle, locale=po.parent.parent.name)
        mo.parent.mkdir(parents=True, exist_ok=True)
        temporary = mo.with_name(f".{mo.name}.{os.getpid()}")
        with temporary.open("wb") as handle:
            write_mo(handle, catalog)
        temporary.replace(mo)
    return target


def select_locale() -> str:
    chosen = session.get("lang")
    if isinstance(chosen, str) and chosen in LANGUAGES:
        return chosen
    return flask_request.accept_languages.best_match(list(LANGUAGES), default=DEFAULT) or DEFAULT


def error_text(exc: Exception) -> str:
    """What the page shows for a refusal: a MuninetError's template translated and filled in.

    Parameters that are `Term`s (field names) are translated too. A template that is not in
    the catalogue (e.g. a library's text) comes back as it is; if a translation does not fit
    its parameters, the English message is shown rather than an error page. Other exceptions
    (the forms' InvalidForm) carry text that is already translated.
    """
    if not isinstance(exc, MuninetError):
        return str(exc)
    if not exc.template:  # gettext("") is the catalogue's header
        return exc.message
    template = str(gettext(exc.template))
    if not exc.params:
        return template
    params = {
        name: str(gettext(value)) if isinstance(value, Term) else value
        for name, value in exc.params.items()
    }
    try:
        return template % params
    except (KeyError, TypeError, ValueError):
        return exc.message


def size(value: int) -> str:
    """A byte count in binary units with the locale's decimal separator."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    amount = float(value)
    unit = units[0]
    for unit in units:
        if abs(amount) < 1024 or unit == units[-1]:
            break
        amount /= 1024
    return f"{format_decimal(amount, format='#,##0.#')} {unit}"


def number(value: int) -> str:
    return str(format_decimal(value))


def when(value: datetime | None) -> str:
    return str(format_datetime(value, "medium")) if value is not None else "—"


def init_app(app: Flask, state_dir: Path) -> None:
    directory = compile_catalogues(state_dir / "admin-ui" / "translations")
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(directory)
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT
    Babel(app, locale_selector=select_locale)
    app.jinja_env.filters["size"] = size
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["when"] = when
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
