"""The one JSONL reader of the prompt formats (pre-tokenized, text, ``messages``): UTF-8 lines
split on "\\n" only (prompt text may hold U+2028 and other separators), ``.gz`` read through
gzip, blank lines skipped, a bad line an error naming the file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def open_text(path: Path, mode: str = "r") -> IO[str]:
    """A UTF-8 text file, gzip-compressed when its name ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8", newline="\n")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8", newline="\n")


def iter_jsonl(path: Path, error: type[Exception]) -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) of every non-blank line; ``error(f"{path}:{n}: ...")``
    for a line that is not JSON."""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line, strict=False)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None


def check_unique_ids(ids: Iterable[str], path: Path, error: type[Exception]) -> None:
    """``error`` naming the first id that occurs twice."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise error(f"{path}: duplicate id {i!r}")
        seen.add(i)
