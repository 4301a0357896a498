"""A member office's setup sheet: what it holds, and the same sheet as a PDF (fpdf2).

The sheet is built once per request from the database (`admin_ui.blueprints.sheets`) and
drawn either by the `sheets_sheet.html` template or by `pdf()` here, in the request's
language. Passwords appear only when they were generated in this very request; otherwise
a row says "(set)". The PDF embeds Debian's DejaVu Sans (fonts-dejavu-core), which covers
Polish and Cyrillic; the standard PDF fonts cover neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flask_babel import format_datetime, gettext
from fpdf import FPDF, FontFace
from fpdf.enums import XPos, YPos

from admin_ui.i18n import size
from provisioning.autoconfig import Endpoints

Row = tuple[str, ...]
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf", "mono": "DejaVuSansMono.ttf"}


def _(message: str, **values: object) -> str:
    """Flask-Babel's gettext, typed."""
    return str(gettext(message, **values))


class FontMissing(Exception):
    """The PDF font is not installed: the sheet cannot be drawn without it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is missing: install Debian's fonts-dejavu-core")
        self.path = path


@dataclass(frozen=True)
class MailboxRow:
    address: str  # the lookup key: what the forms send back
    display: str  # as people read it (Unicode domain)
    login: str  # what mail programs log in with (ASCII domain)
    display_name: str
    quota: int
    enabled: bool
    password: str | None  # only right after it was generated


@dataclass(frozen=True)
class LineRow:
    username: str
    plan: str
    kind: str  # PlanKind value: dialup, pppoe, wireless
    static_ip: str | None
    active: bool
    chap: bool
    password: str | None


@dataclass(frozen=True)
class Sheet:
    member_slug: str
    member_name: str
    association: str
    made_at: datetime
    endpoints: Endpoints
    mailboxes: list[MailboxRow]
    lines: list[LineRow]

    @property
    def fresh(self) -> bool:
        """Whether this sheet shows passwords (and so must be kept safe)."""
        return any(r.password for r in self.mailboxes) or any(r.password for r in self.lines)


def check_fonts(font_dir: Path = FONT_DIR) -> dict[str, Path]:
    """The font files, or FontMissing naming the first one that is not there."""
    paths = {style: font_dir / name for style, name in FONTS.items()}
    for path in paths.values():
        if not path.is_file():
            raise FontMissing(path)
    return paths


def kind_label(kind: str) -> str:
    labels = {
        "dialup": _("Dial-up (PPP)"),
        "pppoe": _("PPPoE (broadband)"),
        "wireless": _("Wireless (hotspot)"),
    }
    return labels.get(kind, kind)


def auth_label(chap: bool) -> str:
    return "PAP, CHAP, MS-CHAPv2" if chap else "PAP, MS-CHAPv2"


def server_rows(ends: Endpoints) -> list[tuple[str, str, int, str]]:
    """(what, host, port, security) for the mail program settings, preferred first."""
    incoming, outgoing = _("Incoming mail (IMAP)"), _("Outgoing mail (SMTP)")
    return [
        (incoming, ends.host, ends.imaps, "SSL/TLS"),
        (incoming, ends.host, ends.imap, "STARTTLS"),
        (outgoing, ends.host, ends.smtps, "SSL/TLS"),
        (outgoing, ends.host, ends.submission, "STARTTLS"),
    ]


class _Document(FPDF):
    """A4 with the sheet's footer on every page."""

    footer_text = ""

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("DejaVu", "", 8)
        self.set_text_color(90)
        self.cell(0, 5, f"{self.footer_text} · {self.page_no()}/{{nb}}", align="C")


def _heading(doc: FPDF, text: str) -> None:
    doc.ln(4)
    doc.set_font("DejaVu", "B", 12)
    doc.cell(0, 8, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.set_font("DejaVu", "", 9.5)


def _table(doc: FPDF, widths: tuple[int, ...], rows: list[Row], mono: int | None = None) -> None:
    """A table with a heading row; column `mono` (passwords) in the monospaced font."""
    heading = FontFace(emphasis="BOLD", fill_color=(232, 238, 244))
    fixed = FontFace(family="DejaVuMono", size_pt=10.5)
    with doc.table(col_widths=widths, headings_style=heading, line_height=6, padding=1.2) as table:
        for number, row in enumerate(rows):
            cells = table.row()
            for column, text in enumerate(row):
                cells.cell(text, style=fixed if number and column == mono else None)


def _paragraph(
    doc: FPDF, text: str, height: float = 5, *, border: bool = False, padding: int = 0
) -> None:
    doc.multi_cell(
        0,
        height,
        text,
        border=1 if border else 0,
        align="L",
        padding=padding,
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )


def _password(value: str | None) -> str:
    return value if value else _("(set)")


def _document(sheet: Sheet, font_dir: Path) -> _Document:
    fonts = check_fonts(font_dir)
    doc = _Document(format="A4")
    doc.set_margins(15, 15, 15)
    doc.set_auto_page_break(auto=True, margin=18)
    doc.add_font("DejaVu", "", fonts[""])
    doc.add_font("DejaVu", "B", fonts["B"])
    doc.add_font("DejaVuMono", "", fonts["mono"])
    doc.set_title(f"{_('Setup sheet')}: {sheet.member_name}")
    doc.set_author(sheet.association)
    doc.set_creator("muninet")
    doc.footer_text = f"{sheet.association} · {sheet.member_name}"
    return doc


def _title(doc: FPDF, sheet: Sheet) -> None:
    doc.set_font("DejaVu", "B", 17)
    _paragraph(doc, f"{_('Setup sheet')}: {sheet.member_name}", 9)
    doc.set_font("DejaVu", "", 10)
    _paragraph(doc, f"{sheet.association} · {format_datetime(sheet.made_at, 'medium')}", 6)
    if sheet.fresh:
        doc.ln(2)
        doc.set_draw_color(163, 32, 32)
        doc.set_font("DejaVu", "B", 10)
        warning = _(
            "This sheet shows new passwords. They are shown only once and cannot be "
            "shown again: keep the sheet safe, or destroy it once they are set up."
        )
        _paragraph(doc, warning, 6, border=True, padding=2)
        doc.set_draw_color(0)


def _mail(doc: FPDF, sheet: Sheet) -> None:
    _heading(doc, _("E-mail: mail program settings"))
    rows: list[Row] = [(_("Server"), _("Host name"), _("Port"), _("Security"))]
    rows += [(w, host, str(port), sec) for w, host, port, sec in server_rows(sheet.endpoints)]
    _table(doc, (55, 65, 20, 40), rows)
    doc.ln(1)
    _paragraph(
        doc,
        _(
            "User name: the full e-mail address (as in the Login column). Password: the "
            "mailbox's password. Authentication: normal password."
        ),
    )
    _heading(doc, _("Mailboxes"))
    if not sheet.mailboxes:
        _paragraph(doc, _("No mailboxes yet."), 6)
        return
    rows = [(_("Address"), _("Login"), _("Quota"), _("Password"))]
    for box in sheet.mailboxes:
        name = box.display + ("" if box.enabled else f" ({_('disabled')})")
        if box.display_name:
            name += f"\n{box.display_name}"
        rows.append((name, box.login, size(box.quota), _password(box.password)))
    _table(doc, (60, 55, 22, 43), rows, mono=3)


def _lines(doc: FPDF, sheet: Sheet) -> None:
    _heading(doc, _("Internet connection: dial-up and broadband"))
    if not sheet.lines:
        _paragraph(doc, _("No subscriber lines yet."), 6)
        return
    _paragraph(
        doc,
        _(
            "Set up the router or computer with the connection type shown, the user "
            "name and the password of the line. The IP address is assigned automatically "
            "unless a fixed one is shown."
        ),
    )
    doc.ln(1)
    rows: list[Row] = [
        (_("User name"), _("Connection"), _("Authentication"), _("IP address"), _("Password"))
    ]
    for line in sheet.lines:
        name = line.username + ("" if line.active else f" ({_('suspended')})")
        rows.append(
            (
                name,
                f"{kind_label(line.kind)}\n{line.plan}",
                auth_label(line.chap),
                line.static_ip or _("automatic"),
                _password(line.password),
            )
        )
    _table(doc, (42, 38, 33, 27, 40), rows, mono=4)


def pdf(sheet: Sheet, font_dir: Path = FONT_DIR) -> bytes:
    """The sheet as an A4 PDF in the request's language (FontMissing without the font)."""
    doc = _document(sheet, font_dir)
    doc.add_page()
    _title(doc, sheet)
    _mail(doc, sheet)
    _lines(doc, sheet)
    return bytes(doc.output())
