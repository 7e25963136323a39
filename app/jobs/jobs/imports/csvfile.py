"""Reading an import's CSV file (the same code at upload and in the job) and writing the
rejected rows back as a CSV file that can be fixed and uploaded again."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.jobs.jobs.exports import FORMULA_PREFIXES, csv_cell
from app.jobs.services.registry import JobInputError

ERRORS_COLUMN = "import_errors"
"""Added to the rejected-rows file; ignored when that file is uploaded again."""
MAX_CELL_CHARS = 250_000
"""A body may hold 200,000 characters; the csv module's own limit (131,072) is lower."""

csv.field_size_limit(max(csv.field_size_limit(), MAX_CELL_CHARS))


class ImportFileError(JobInputError):
    """The uploaded file cannot be imported at all (not CSV, wrong columns, too big)."""

    def __init__(self, message: str, status: Literal[413, 422] = 422) -> None:
        super().__init__(message, "file", status=status)


@dataclass(frozen=True)
class Columns:
    """The header an import of one kind accepts."""

    allowed: tuple[str, ...]
    required: tuple[str, ...]
    shown: tuple[str, ...]
    """The columns the job page shows of a rejected row (the file has them all)."""


@dataclass
class Row:
    line: int
    """The line of the file where the row starts (the header is line 1)."""
    values: dict[str, str]
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CsvFile:
    header: tuple[str, ...]
    rows: list[Row]


def decode(data: bytes) -> str:
    """UTF-8 text, with or without a byte order mark; anything else is refused."""
    if not data.strip():
        raise ImportFileError("The file is empty.")
    if b"\x00" in data:
        raise ImportFileError("This is not a CSV file (it holds binary data).")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFileError(
            "The file is not UTF-8 text. Save it as CSV UTF-8 and upload it again."
        ) from None


def unescape(cell: str) -> str:
    """A cell as Keel's exports escape formulas (`'=...`) imports as written (`=...`)."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_PREFIXES):
        return cell[1:]
    return cell


def read_csv(data: bytes, columns: Columns, max_rows: int) -> CsvFile:
    """Every data row with its line number; ImportFileError for a file that cannot be
    imported (encoding, header, no rows, more than `max_rows`). Blank lines are skipped."""
    text = decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = tuple(cell.strip().lower() for cell in next(reader, []))
        _check_header(header, columns)
        rows: list[Row] = []
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(rows) == max_rows:
                raise ImportFileError(
                    f"The file has more than {max_rows:,} rows; split it into smaller files."
                )
            rows.append(_row(line, header, cells))
    except csv.Error as exc:
        raise ImportFileError(
            f"This is not a readable CSV file (line {reader.line_num}: {exc})."
        ) from None
    if not rows:
        raise ImportFileError("The file has a header but no rows to import.")
    return CsvFile(header, rows)


def _check_header(header: tuple[str, ...], columns: Columns) -> None:
    named = [name for name in header if name]
    if not named:
        raise ImportFileError(
            f"The first line must name the columns: {', '.join(columns.allowed)}."
        )
    problems = []
    unknown = [name for name in named if name not in (*columns.allowed, ERRORS_COLUMN)]
    if unknown:
        problems.append(f"unknown columns: {', '.join(unknown)}")
    missing = [name for name in columns.required if name not in header]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        problems.append(f"columns named twice: {', '.join(twice)}")
    if len(named) < len(header):
        problems.append("a column without a name")
    if problems:
        raise ImportFileError(
            f"The header does not fit ({'; '.join(problems)}). "
            f"The columns are: {', '.join(columns.allowed)} ({', '.join(columns.required)} "
            "required)."
        )


def _row(line: int, header: tuple[str, ...], cells: list[str]) -> Row:
    values = {
        name: unescape(cell)
        for name, cell in zip(header, cells, strict=False)
        if name != ERRORS_COLUMN
    }
    row = Row(line, values)
    if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
        row.reasons.append(f"The row has {len(cells)} values; the header names {len(header)}.")
    return row


def rejected_csv(header: Sequence[str], rows: Sequence[Row]) -> str:
    """The rejected rows as they were uploaded, with their reasons in a last column; cells
    a spreadsheet would run as formulas are escaped like exports (and imported back)."""
    columns = [name for name in header if name != ERRORS_COLUMN]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*columns, ERRORS_COLUMN])
    for row in rows:
        cells = [row.values.get(name, "") for name in columns]
        writer.writerow([csv_cell(cell) for cell in [*cells, " | ".join(row.reasons)]])
    return out.getvalue()
