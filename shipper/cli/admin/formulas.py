"""Spreadsheet formulas in CSV cells: neutralised when shipper writes CSV, restored when it
reads CSV back, so logged text can never run in a spreadsheet and ``export`` then ``import``
gives back the text exactly.

A spreadsheet runs a cell as a formula when it starts with ``=``, ``+``, ``-`` or ``@``; OWASP's
list of what to neutralise adds a tab and a carriage return. Whitespace before one of the
four counts too, since whether a spreadsheet drops leading spaces depends on the application
and its import settings (LibreOffice's "trim spaces", for one). OWASP's remedy, which shipper
follows, is a single quote before such a cell: the spreadsheet shows it as text. To make the
rule reversible, a cell whose leading single quotes stand before such a start gets one more
quote too (``'=1`` is written ``''=1``), and reading removes exactly one quote from every cell
that has quotes before such a start.
"""

from __future__ import annotations

__all__ = ["FORMULA_STARTS", "is_formula", "neutralise", "restore"]

#: what a cell that a spreadsheet runs starts with (OWASP's list)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_AFTER_SPACE = ("=", "+", "-", "@")


def is_formula(text: str) -> bool:
    """Would a spreadsheet read ``text`` as a formula: it starts with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return, or with any other whitespace (spaces, newlines, no-break
    spaces) followed by ``=``, ``+``, ``-`` or ``@``."""
    return text.startswith(FORMULA_STARTS) or text.lstrip().startswith(_AFTER_SPACE)


def neutralise(text: str) -> str:
    """The cell as shipper writes it: a single quote in front when ``text``, past its own
    leading single quotes, is a formula; ``text`` as it is otherwise."""
    return "'" + text if is_formula(text.lstrip("'")) else text


def restore(cell: str) -> str:
    """The text :func:`neutralise` was given: one leading single quote removed when the rest,
    past its leading single quotes, is a formula."""
    return cell[1:] if cell.startswith("'") and is_formula(cell.lstrip("'")) else cell
