"""Durations as people write them in settings ("30s", "15m", "4h", "5d")."""

import re

from provisioning.errors import ValidationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str | int | float) -> float:
    """Seconds from "90", "90s", "15m", "4h" or "5d"."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValidationError("duration must not be negative: %(text)s", text=text)
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValidationError("not a duration: %(text)r (use e.g. 30s, 15m, 4h, 5d)", text=text)
    number, unit = match.groups()
    return float(number) * _UNITS[(unit or "s").lower()]
