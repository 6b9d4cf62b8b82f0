"""How the book shows tables: one display layer for every chapter.

>>> show_table(frame, formats={"accuracy": "{:.1%}", "n": "{:,d}"}, caption="Accuracy by method")

* numbers are formatted per column (``formats``: a format string or a function; floats otherwise get
  3 significant digits, integers thousands separators, booleans yes/no);
* missing values (None, NaN, NaT) are written as an em dash, and a note under the table says so;
* the pandas index is dropped unless ``index=True`` (a meaningful index should be a column);
* long cell texts and column names are shortened to ``max_chars`` with the full text on hover
  (``title``);
* the table sits in its own horizontal scroll box (focusable, labelled by its caption) with the
  first column fixed, so a wide table never widens the page;
* numeric columns are right-aligned with tabular figures.
"""

from __future__ import annotations

import html
import math
import numbers
from typing import Any, Callable, Mapping

import pandas as pd

MISSING = "—"
MISSING_NOTE = f"{MISSING}: no value (not measured or not defined here)."


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool) and not _is_bool(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def format_value(value: Any, fmt: str | Callable[[Any], str] | None = None) -> str:
    """One cell as text: ``fmt`` (a format string or a function), or a sensible default."""
    if _is_missing(value):
        return MISSING
    if fmt is not None:
        return fmt(value) if callable(fmt) else fmt.format(value)
    if _is_bool(value):
        return "yes" if bool(value) else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,d}"
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,d}"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(value)


def shorten(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def _cell(tag: str, text: str, max_chars: int, attrs: str = "") -> str:
    shown = shorten(text, max_chars)
    title = f' title="{html.escape(text)}"' if shown != text else ""
    return f"<{tag}{attrs}{title}>{html.escape(shown)}</{tag}>"


def table_html(frame: pd.DataFrame, formats: Mapping[str, str | Callable[[Any], str]] | None = None,
               caption: str = "", index: bool = False, max_chars: int = 60, note: str = "") -> str:
    """The HTML of a table in the book's style (see the module docstring)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    formats = dict(formats or {})
    unknown = [c for c in formats if c not in {str(c) for c in frame.columns} | {str(n) for n in frame.index.names}]
    if unknown:
        raise ValueError(f"formats name columns that the table does not have: {unknown}; "
                         f"columns: {[str(c) for c in frame.columns]}")
    data = frame.reset_index() if index else frame
    columns = [str(c) for c in data.columns]
    numeric_cols = {c for c, dtype in zip(columns, data.dtypes) if pd.api.types.is_numeric_dtype(dtype)
                    and not pd.api.types.is_bool_dtype(dtype)}
    missing = False
    head = "".join(_cell("th", c, max(max_chars // 2, 24), ' scope="col"' + (' class="num"' if c in numeric_cols else ""))
                   for c in columns)
    rows = []
    for values in data.itertuples(index=False, name=None):
        cells = []
        for col, value in zip(columns, values):
            missing |= _is_missing(value)
            numeric = col in numeric_cols or _is_number(value)
            cells.append(_cell("td", format_value(value, formats.get(col)), max_chars,
                               ' class="num"' if numeric else ""))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = [n for n in (note, MISSING_NOTE if missing else "") if n]
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    label = html.escape(caption or "table", quote=True)
    foot = "".join(f'<p class="fmbook-table-note">{html.escape(n)}</p>' for n in notes)
    return (f'<div class="fmbook-scroll" tabindex="0" role="region" aria-label="{label}">'
            f'<table class="fmbook-table fmbook-sticky">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{foot}")


def rows_html(caption: str, rows: list[tuple[Any, ...]], header: tuple[str, ...] = (), max_chars: int = 80) -> str:
    """A small table of (label, value, ...) rows in the same style (parameters, provenance);
    an empty ``header`` draws no header row."""
    head = ("<thead><tr>" + "".join(_cell("th", str(h), max_chars, ' scope="col"') for h in header) + "</tr></thead>"
            if any(header) else "")
    body = "".join("<tr>" + "".join(_cell("td", format_value(c), max_chars) for c in row) + "</tr>" for row in rows)
    label = html.escape(caption or "table", quote=True)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<div class="fmbook-scroll" tabindex="0" role="region" aria-label="{label}">'
            f'<table class="fmbook-table">{cap}{head}<tbody>{body}</tbody></table></div>')


def show_table(frame: pd.DataFrame, formats: Mapping[str, str | Callable[[Any], str]] | None = None,
               caption: str = "", index: bool = False, max_chars: int = 60, note: str = "") -> None:
    """Display ``frame`` in a notebook as the book's table.

    Returns None, so that a call on a cell's last line shows the table once (for the HTML itself,
    to glue or save, use :func:`table_html`).
    """
    from IPython.display import HTML, display

    display(HTML(table_html(frame, formats, caption, index, max_chars, note)))
