"""Byte sizes as people and Dovecot write them ("10G", "512M")."""

import re

from provisioning.errors import ValidationError

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Parse "10G", "1.5G", "512M", "1024" into bytes (binary units, like Dovecot)."""
    if isinstance(text, int):
        if text < 0:
            raise ValidationError("size must not be negative: %(text)s", text=text)
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValidationError("not a size: %(text)r (use e.g. 500M, 2G, 10G)", text=text)
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def format_size(size: int, *, exact: bool = False) -> str:
    """A short form for people ("10G", "1.5G"); with exact, one that parses back to `size`."""
    for unit in ("T", "G", "M", "K"):
        factor = _UNITS[unit]
        if size >= factor:
            if size % factor == 0:
                return f"{size // factor}{unit}"
            if not exact:
                return f"{size / factor:.1f}{unit}"
    return str(size) if exact else f"{size}B"
