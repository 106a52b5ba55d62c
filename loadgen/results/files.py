"""Reading and writing the JSON files of run and sweep directories: atomic writes, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadgen.cache import publish_text


class ResultFileError(ValueError):
    """A result file that cannot be read; the message names the file and why."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file and a rename, so a reader never sees half a file
    (and a crash never leaves one)."""
    publish_text(Path(path), text)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot read it as JSON ({exc})") from None
