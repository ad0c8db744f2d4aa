"""Terraform's (and hooks') ANSI colours as HTML: a small SGR-to-span converter.

Only SGR sequences (`ESC [ ... m`) are rendered: bold, faint, italic, underline, the eight
colours and their bright forms, foreground and background, and their resets (256 and true
colours are skipped with their arguments). Every other
escape sequence is dropped. The text between them is HTML-escaped, so a log line can never
become markup; what comes out is spans with fixed class names (`a-b`, `a-fg1`, ...) that the
stylesheet colours. static/live.js does the same for lines that arrive live.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from markupsafe import Markup, escape

# An SGR sequence, or any other CSI / OSC / two-character escape (dropped).
_ESCAPE = re.compile(
    r"\x1b(?:\[([0-9;]*)m|\[[0-9;?]*[A-Za-z]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|.)"
)


@dataclass(frozen=True, slots=True)
class Style:
    bold: bool = False
    faint: bool = False
    italic: bool = False
    underline: bool = False
    fg: int | None = None  # 0-7, 8-15 bright
    bg: int | None = None

    def classes(self) -> str:
        names = [
            name
            for name, on in (
                ("a-b", self.bold),
                ("a-f", self.faint),
                ("a-i", self.italic),
                ("a-u", self.underline),
            )
            if on
        ]
        if self.fg is not None:
            names.append(f"a-fg{self.fg}")
        if self.bg is not None:
            names.append(f"a-bg{self.bg}")
        return " ".join(names)


PLAIN = Style()


def apply_sgr(style: Style, params: str) -> Style:
    """The style after one SGR sequence with `params` (`"1;31"`; empty means reset). Pure."""
    codes = [int(p) if p else 0 for p in params.split(";")] if params else [0]
    i = 0
    while i < len(codes):
        code = codes[i]
        if code in (38, 48):  # 256 colours (5;N) or true colour (2;R;G;B): not rendered
            i += 3 if codes[i + 1 : i + 2] == [5] else 5
            continue
        style = _one(style, code)
        i += 1
    return style


def _one(style: Style, code: int) -> Style:
    if code == 0:
        return PLAIN
    simple = {
        1: {"bold": True},
        2: {"faint": True},
        3: {"italic": True},
        4: {"underline": True},
        22: {"bold": False, "faint": False},
        23: {"italic": False},
        24: {"underline": False},
        39: {"fg": None},
        49: {"bg": None},
    }
    if code in simple:
        return replace(style, **simple[code])  # type: ignore[arg-type]
    if 30 <= code <= 37:
        return replace(style, fg=code - 30)
    if 90 <= code <= 97:
        return replace(style, fg=code - 90 + 8)
    if 40 <= code <= 47:
        return replace(style, bg=code - 40)
    if 100 <= code <= 107:
        return replace(style, bg=code - 100 + 8)
    return style  # blinking and the rest: left as they are


def to_html(text: str) -> Markup:
    """`text` escaped for HTML, its SGR colours as spans."""
    out: list[str] = []
    style, at = PLAIN, 0
    for match in _ESCAPE.finditer(text):
        _emit(out, text[at : match.start()], style)
        at = match.end()
        if match.group(1) is not None or match.group(0) == "\x1b[m":
            style = apply_sgr(style, match.group(1) or "")
    _emit(out, text[at:], style)
    return Markup("".join(out))


def _emit(out: list[str], piece: str, style: Style) -> None:
    if not piece:
        return
    safe = str(escape(piece))
    classes = style.classes()
    out.append(f'<span class="{classes}">{safe}</span>' if classes else safe)
