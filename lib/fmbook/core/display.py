"""How the book shows tables: one display layer for every chapter.

>>> show_table(frame, formats={"accuracy": "{:.1%}", "n": "{:,d}"}, caption="Accuracy by method")

* numbers are formatted per column (``formats``; floats default to 3 significant digits);
* missing values are written as an em dash, and a note under the table says so;
* the pandas index is dropped unless ``index=True`` (a meaningful index should be a column);
* long cell texts are shortened to ``max_chars`` with the full text on hover (``title``);
* the table sits in its own horizontal scroll box with the first column fixed.
"""

from __future__ import annotations

import html
import math
from typing import Any, Callable, Mapping

import pandas as pd

MISSING = "—"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_value(value: Any, fmt: str | Callable[[Any], str] | None = None) -> str:
    """One cell as text: ``fmt`` (a format string or a function), or a sensible default."""
    if _is_missing(value):
        return MISSING
    if fmt is not None:
        return fmt(value) if callable(fmt) else fmt.format(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return f"{int(value):,d}"
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.2e}"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(value)


def table_html(frame: pd.DataFrame, formats: Mapping[str, str | Callable[[Any], str]] | None = None,
               caption: str = "", index: bool = False, max_chars: int = 60, note: str = "") -> str:
    """The HTML of a table in the book's style (see the module docstring)."""
    formats = dict(formats or {})
    data = frame.reset_index() if index else frame
    missing = False
    head = "".join(f'<th scope="col">{html.escape(str(c))}</th>' for c in data.columns)
    rows = []
    for _, row in data.iterrows():
        cells = []
        for col in data.columns:
            value = row[col]
            missing |= _is_missing(value)
            text = format_value(value, formats.get(str(col)))
            shown = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
            title = f' title="{html.escape(text)}"' if shown != text else ""
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}{title}>{html.escape(shown)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = [n for n in (note, f"{MISSING}: no value (not measured or not defined here)." if missing else "") if n]
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    foot = "".join(f'<p class="fmbook-table-note">{html.escape(n)}</p>' for n in notes)
    return (f'<div class="fmbook-scroll"><table class="fmbook-table fmbook-sticky">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{foot}")


def show_table(frame: pd.DataFrame, formats: Mapping[str, str | Callable[[Any], str]] | None = None,
               caption: str = "", index: bool = False, max_chars: int = 60, note: str = ""):
    """Display ``frame`` in a notebook as the book's table (returns the IPython HTML object)."""
    from IPython.display import HTML, display

    obj = HTML(table_html(frame, formats, caption, index, max_chars, note))
    display(obj)
    return obj
