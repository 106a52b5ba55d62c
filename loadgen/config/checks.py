"""The value checks of a run's configuration: each failure one line naming the flag."""

from __future__ import annotations

import math


def at_least(flag: str, value: int | None, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{flag} must be a whole number, not {value!r}")
    if value < low:
        raise ValueError(f"{flag} must be >= {low}, not {value}")


def _number(flag: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{flag} must be a number, not {value!r}")


def positive(flag: str, value: float | None) -> None:
    if value is None:
        return
    _number(flag, value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{flag} must be a finite number > 0, not {value:g}")


def fraction(flag: str, value: float) -> None:
    """A share between 0 and 1, both included."""
    _number(flag, value)
    if not 0 <= value <= 1:  # nan fails too
        raise ValueError(f"{flag} must be between 0 and 1, not {value:g}")


def one_of(flag: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{flag} must be one of {', '.join(choices)}")
