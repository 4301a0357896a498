"""Reading the CSV files muninet imports: header checks and rows with line numbers."""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import IO

from provisioning.errors import ValidationError

EXTRA = "__extra__"  # set in a row that has more cells than the header names


@dataclass(frozen=True)
class Row:
    line: int
    fields: dict[str, str]


def read_rows(stream: IO[str], columns: Sequence[str], required: Collection[str]) -> list[Row]:
    """Parse the CSV, checking its header; blank rows are skipped, others keep their line."""
    reader = csv.DictReader(stream)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not header:
        raise ValidationError("the CSV file is empty")
    unknown = [h for h in header if h not in columns]
    if unknown:
        raise ValidationError(
            "unknown CSV column(s) %(unknown)s; expected %(columns)s",
            unknown=", ".join(unknown),
            columns=", ".join(columns),
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ValidationError(
            "CSV column(s) given twice: %(duplicated)s", duplicated=", ".join(duplicated)
        )
    missing = set(required) - set(header)
    if missing:
        raise ValidationError(
            "the CSV file lacks column(s): %(missing)s", missing=", ".join(sorted(missing))
        )
    reader.fieldnames = header
    rows = []
    for record in reader:
        values = {k: (v or "").strip() for k, v in record.items() if k is not None}
        if None in record:
            values[EXTRA] = "yes"
        if any(values.values()):
            rows.append(Row(line=reader.line_num, fields=values))
    return rows
