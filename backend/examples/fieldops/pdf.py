"""The schedules report as a PDF (fpdf2): a title, the period and one line per schedule."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fpdf import FPDF


def render_report(
    path: Path,
    *,
    report_id: int,
    day_from: datetime.date,
    day_to: datetime.date,
    rows: Iterable[Mapping[str, Any]],
) -> int:
    """Write the report to ``path`` (complete or not at all); returns the schedules listed."""
    pdf = FPDF()
    pdf.set_title(f"Field operations report {report_id}")
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.cell(text=f"Field operations report {report_id}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    pdf.cell(text=f"Schedules from {day_from} to {day_to}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    count = 0
    with pdf.table(col_widths=(30, 80, 50, 30)) as table:
        table.row(("Day", "Title", "Assignee", "Locked"))
        for row in rows:
            locked = "yes" if row["locked"] else "no"
            table.row((str(row["day"]), row["title"], row["assignee"], locked))
            count += 1
    pdf.ln(4)
    pdf.cell(text=f"{count} schedules", new_x="LMARGIN", new_y="NEXT")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pdf.output(str(partial))
    partial.rename(path)
    return count
