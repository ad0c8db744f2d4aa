"""ANSI colours as HTML (web/ansi.py): the SGR codes terraform and hooks print become spans,
every other escape is dropped, and the text is always escaped."""

from __future__ import annotations

import pytest

from tfward.daemon.web.ansi import PLAIN, Style, apply_sgr, to_html


@pytest.mark.parametrize(
    ("before", "params", "after"),
    [
        (PLAIN, "1", Style(bold=True)),
        (PLAIN, "31", Style(fg=1)),
        (PLAIN, "1;32", Style(bold=True, fg=2)),
        (PLAIN, "93", Style(fg=11)),
        (PLAIN, "44", Style(bg=4)),
        (PLAIN, "104", Style(bg=12)),
        (Style(bold=True, fg=1), "0", PLAIN),
        (Style(bold=True, fg=1), "", PLAIN),
        (Style(bold=True, fg=1), "22", Style(fg=1)),
        (Style(fg=1, bg=2), "39", Style(bg=2)),
        (Style(underline=True), "24", PLAIN),
        (PLAIN, "38;5;208;1", Style(bold=True)),  # 256 colours skipped with their arguments
        (PLAIN, "48;2;10;20;30;4", Style(underline=True)),  # so are true colours
    ],
)
def test_each_sgr_sequence_changes_the_style_as_a_terminal_would(
    before: Style, params: str, after: Style
) -> None:
    assert apply_sgr(before, params) == after


def test_coloured_text_becomes_spans_with_the_stylesheets_classes() -> None:
    html = to_html("\x1b[1;31mError:\x1b[0m no \x1b[32mchanges\x1b[m.")
    assert str(html) == (
        '<span class="a-b a-fg1">Error:</span> no <span class="a-fg2">changes</span>.'
    )


def test_markup_in_a_log_line_is_escaped_and_never_becomes_an_element() -> None:
    html = str(to_html('\x1b[33m<img src=x onerror=alert(1)>\x1b[0m & "quotes"'))
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&amp; &#34;quotes&#34;" in html


def test_escapes_that_are_not_colours_are_dropped() -> None:
    text = "a\x1b[2Kb\x1b[1Gc\x1b]0;title\x07d\x1b(Be"
    assert str(to_html(text)) == "abcde"
