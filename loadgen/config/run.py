"""The configuration of one run: typed sections, and the one table of their flat names.

Outside the code a run's options have flat names: ``loadgen run``'s flags (their argparse
``dest``), a sweep config's ``run:`` keys, the embedded default's options and the ``config``
object of manifest.json. ``FLAT`` maps each flat name to its section and field;
``RunConfig.build(**flat)`` builds and checks every section, ``RunConfig.to_flat()`` gives the
flat object back (what the manifest records), ``RunConfig.replace(**flat)`` is the one way to
change values after construction (new sections, checked again).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from loadgen.config.sections import (
    EndpointOptions,
    LoadOptions,
    MeasurementOptions,
    SamplingOptions,
    ScaleOptions,
    TlsOptions,
)

# The sections in the order they are built (and checked).
SECTIONS: dict[str, type] = {"load": LoadOptions, "endpoint": EndpointOptions,
                             "tls": TlsOptions, "sampling": SamplingOptions,
                             "scale": ScaleOptions, "measurement": MeasurementOptions}
# Fields of RunConfig itself, flat names as they are.
TOP_LEVEL = ("out", "progress", "extra")
# Section fields whose flat name differs from the field's name.
_RENAMED = {("endpoint", "url"): "endpoint"}


def _flat_table() -> dict[str, tuple[str | None, str]]:
    table: dict[str, tuple[str | None, str]] = {}
    # the manifest's order: what the run is pointed at, where it writes, then the rest
    for sec in ("endpoint", "out", "load", "tls", "sampling", "scale", "measurement",
                "progress", "extra"):
        if sec in TOP_LEVEL:
            table[sec] = (None, sec)
            continue
        for f in fields(SECTIONS[sec]):
            flat = _RENAMED.get((sec, f.name), f.name)
            assert flat not in table, flat
            table[flat] = (sec, f.name)
    assert set(TOP_LEVEL) <= set(table)
    return table


# flat name -> (section, field); section None: a field of RunConfig itself.
FLAT: dict[str, tuple[str | None, str]] = _flat_table()


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One run's configuration. Frozen: every value was checked when it was built.

    ``progress`` and ``extra`` are recorded in the manifest only (the live line is
    ``run_benchmark``'s own argument)."""

    endpoint: EndpointOptions
    out: Path
    load: LoadOptions
    tls: TlsOptions = field(default_factory=TlsOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    scale: ScaleOptions = field(default_factory=ScaleOptions)
    measurement: MeasurementOptions = field(default_factory=MeasurementOptions)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, **flat: Any) -> RunConfig:
        """The configuration from flat names (``endpoint``, ``engine`` and ``out`` required),
        every value checked: a ValueError names the flag; an unknown name is a TypeError."""
        return cls(**_sections(flat, check=True))

    @classmethod
    def from_manifest(cls, config: dict[str, Any]) -> RunConfig:
        """The configuration a run directory's manifest.json recorded (its secrets were never
        there: the endpoint without credentials, header values masked). Names that are not
        flat names (what the run added, e.g. ``warmup_requests_effective``) are left out; the
        values are read as recorded, not checked again (they were when the run started, and a
        run directory stays readable when a later version checks differently)."""
        flat = {k: v for k, v in config.items() if k in FLAT}
        flat["out"] = flat.get("out") or "."
        flat.setdefault("endpoint", "")
        flat.setdefault("engine", "")
        return cls(**_sections(flat, check=False))

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with these flat values changed; each section they touch is built and
        checked again. The one way a value changes after construction."""
        by_sec: dict[str | None, dict[str, Any]] = {}
        for name, value in flat.items():
            sec, attr = _where(name)
            by_sec.setdefault(sec, {})[attr] = _norm(attr, value)
        changes: dict[str, Any] = dict(by_sec.pop(None, {}))
        for sec, values in by_sec.items():
            assert sec is not None
            changes[sec] = replace(getattr(self, sec), **values)
        return replace(self, **changes)

    def to_flat(self) -> dict[str, Any]:
        """Every value by its flat name, JSON-ready (``out`` a string): manifest.json's
        ``config`` before redaction."""
        out: dict[str, Any] = {}
        for name, (sec, attr) in FLAT.items():
            value = getattr(self if sec is None else getattr(self, sec), attr)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, list | dict):
                value = _copy(value)
            out[name] = value
        return out


def _copy(value: Any) -> Any:
    """A copy of a list or dict value, so the flat object shares nothing with the config."""
    return list(value) if isinstance(value, list) else dict(value)


def _where(name: str) -> tuple[str | None, str]:
    try:
        return FLAT[name]
    except KeyError:
        raise TypeError(f"unknown run option {name!r}") from None


def _norm(attr: str, value: Any) -> Any:
    return Path(value) if attr == "out" and not isinstance(value, Path) else value


def _sections(flat: dict[str, Any], check: bool) -> dict[str, Any]:
    values: dict[str | None, dict[str, Any]] = {None: {}, **{s: {} for s in SECTIONS}}
    for name, value in flat.items():
        sec, attr = _where(name)
        values[sec][attr] = _norm(attr, value)
    kwargs: dict[str, Any] = dict(values[None])
    if "out" not in kwargs:
        raise TypeError("RunConfig.build: 'out' is required")
    for sec, cls in SECTIONS.items():
        kwargs[sec] = cls(**values[sec]) if check else _unchecked(cls, values[sec])
    return kwargs


def _unchecked(cls: type, values: dict[str, Any]) -> Any:
    """A section holding ``values`` (defaults for the rest) without its checks."""
    obj: Any = object.__new__(cls)
    for f in fields(cls):
        if f.name in values:
            v = values[f.name]
        elif f.default is not MISSING:
            v = f.default
        elif f.default_factory is not MISSING:
            v = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} is required")
        object.__setattr__(obj, f.name, v)
    return obj


def default(name: str) -> Any:
    """The default of the option with flat name ``name``."""
    sec, attr = FLAT[name]
    cls = RunConfig if sec is None else SECTIONS[sec]
    for f in fields(cls):
        if f.name == attr:
            if f.default is not MISSING:
                return f.default
            break
    raise KeyError(f"run option {name} has no default")


# What a run is pointed at and how hard it is driven: set per cell by a sweep, not by `run:`.
PER_CELL = frozenset({"endpoint", "engine", "out", "concurrency", "request_rate", "progress",
                      "extra"})
# `loadgen run`'s exit code alone: a sweep judges each cell's failed requests itself (its SLO).
RUN_EXIT_ONLY = frozenset({"max_error_rate"})
# The keys a sweep config's `run:` section may set.
SWEEP_RUN_KEYS = frozenset(FLAT) - PER_CELL - RUN_EXIT_ONLY
