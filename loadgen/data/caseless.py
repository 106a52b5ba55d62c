"""Case-insensitive search, fast: Python's ``re`` scans a text several times slower with
IGNORECASE than without, so a pattern written in lower case is first searched case-sensitively
in the lower-cased text, and with IGNORECASE in the text itself only where that finds a match
(for the exact span).

The two agree: on a text, IGNORECASE matches an ASCII letter of the pattern to a character
whose ``lower()`` is that letter, and besides only to U+0130, U+0131 and U+017F (``ODD``;
tests/test_data_review.py checks this over every code point); a text holding one of those is
searched with IGNORECASE alone.
"""

from __future__ import annotations

import re

ODD = "\u0130\u0131\u017f"
_ODD = re.compile(f"[{ODD}]")


def lowered(text: str) -> str | None:
    """``text.lower()``, or None when the text holds a character of ``ODD``."""
    return None if _ODD.search(text) else text.lower()


class Caseless:
    """A case-insensitive pattern; ``search(text, lowered(text))`` is
    ``re.search(pattern, text, re.IGNORECASE)``."""

    def __init__(self, pattern: str) -> None:
        if pattern != pattern.lower():
            raise ValueError(f"a caseless pattern is written in lower case: {pattern!r}")
        self.plain = re.compile(pattern)
        self.exact = re.compile(pattern, re.IGNORECASE)

    def search(self, text: str, low: str | None) -> re.Match[str] | None:
        if low is not None and self.plain.search(low) is None:
            return None
        return self.exact.search(text)
