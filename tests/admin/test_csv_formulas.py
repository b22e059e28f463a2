"""The spreadsheet-formula rule for CSV cells (shipper/cli/admin/formulas.py): every cell a
spreadsheet would run gets a single quote, and reading takes exactly that quote off again."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.cli.admin.formulas import is_formula, neutralise, restore


@pytest.mark.parametrize(("text", "written"), [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("@SUM(1+1)", "'@SUM(1+1)"),
    ("+1+1", "'+1+1"),
    ("-2+3", "'-2+3"),
    ("-5", "'-5"),  # OWASP's rule has no exception for numbers
    ("\t=1", "'\t=1"),
    ("\tplain", "'\tplain"),  # a tab or a CR first is enough
    ("\rplain", "'\rplain"),
    (" =1", "' =1"),  # whitespace before = + - @ counts
    ("   @x", "'   @x"),
    ("\n+1", "'\n+1"),
    ("\u00a0-1", "'\u00a0-1"),  # a no-break space is whitespace too
    ("'=1", "''=1"),  # one more quote, so reading gives back the quote that was there
    ("''@x", "'''@x"),
    ("' =1", "'' =1"),
    # nothing a spreadsheet runs: as it is
    ("", ""),
    ("'", "'"),
    ("'plain", "'plain"),
    ("a=1", "a=1"),
    (" plain", " plain"),
    ("\nplain", "\nplain"),
    ('{"a":"=1"}', '{"a":"=1"}'),
    ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00Z"),
])
def test_the_exact_rule(text: str, written: str) -> None:
    assert neutralise(text) == written
    assert restore(written) == text


text_near_formulas = st.text(alphabet=st.sampled_from(
    ["=", "+", "-", "@", "\t", "\r", "\n", " ", "\u00a0", "'", "a", "1", '"', ","]), max_size=8)


@settings(max_examples=300)
@given(st.one_of(text_near_formulas, st.text(max_size=20)))
def test_a_written_cell_never_runs_and_reads_back_to_the_text(text: str) -> None:
    cell = neutralise(text)
    assert not is_formula(cell)
    assert restore(cell) == text


@settings(max_examples=300)
@given(text_near_formulas)
def test_reading_a_cell_no_one_neutralised_changes_at_most_one_quote(cell: str) -> None:
    """A cell from another tool reads as itself unless it has quotes before a formula: then
    one quote goes, as any reader of OWASP-quoted CSV takes it."""
    read = restore(cell)
    assert read == cell or (cell.startswith("'") and read == cell[1:]
                            and is_formula(cell.lstrip("'")))
