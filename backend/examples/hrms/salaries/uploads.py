"""Reading a salary file (CSV or Excel) into rows; every problem names the row at fault."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

COLUMNS = ("employee_id", "name", "department", "salary")


class UploadError(ValueError):
    """The file cannot be read as salaries; the message says what to fix."""


@dataclass(frozen=True)
class SalaryRow:
    employee_id: str
    name: str
    department: str
    salary: Decimal


def source_of(filename: str) -> str:
    """``csv`` or ``excel`` from the file's name."""
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith(".xlsx"):
        return "excel"
    raise UploadError(f"{filename}: upload a .csv or an .xlsx file")


def read_rows(filename: str, content: bytes) -> tuple[str, list[SalaryRow]]:
    source = source_of(filename)
    table = _csv_table(content) if source == "csv" else _excel_table(content)
    if not table:
        raise UploadError(f"{filename}: the file is empty")
    header = [str(cell or "").strip().lower() for cell in table[0]]
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise UploadError(f"{filename}: the header lacks {', '.join(missing)}")
    index = {column: header.index(column) for column in COLUMNS}
    rows = [
        _row(filename, number, line, index)
        for number, line in enumerate(table[1:], start=2)
        if any(cell not in (None, "") for cell in line)
    ]
    if not rows:
        raise UploadError(f"{filename}: no salary rows under the header")
    return source, rows


def _row(filename: str, number: int, line: list[Any], index: dict[str, int]) -> SalaryRow:
    def cell(column: str) -> str:
        position = index[column]
        value = line[position] if position < len(line) else None
        return "" if value is None else str(value).strip()

    values = {column: cell(column) for column in COLUMNS}
    empty = [column for column, value in values.items() if not value]
    if empty:
        raise UploadError(f"{filename} row {number}: {', '.join(empty)} is empty")
    try:
        salary = Decimal(values["salary"]).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise UploadError(
            f"{filename} row {number}: salary {values['salary']!r} is not a number"
        ) from None
    if salary < 0 or not salary.is_finite():
        raise UploadError(f"{filename} row {number}: salary must be 0 or more")
    return SalaryRow(values["employee_id"], values["name"], values["department"], salary)


def _csv_table(content: bytes) -> list[list[Any]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadError("the CSV file is not UTF-8") from None
    return [list(line) for line in csv.reader(io.StringIO(text))]


def _excel_table(content: bytes) -> list[list[Any]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, ... for a bad file
        raise UploadError(f"the Excel file cannot be read: {type(exc).__name__}") from None
    try:
        sheet = workbook.worksheets[0]
        return [list(line) for line in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()
