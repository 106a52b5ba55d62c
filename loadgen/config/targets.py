"""``--metrics`` values, parsed and checked when the run's configuration is built: the metrics
targets a run scrapes instead of ``<endpoint>/metrics``.

- ``none``: no scraping at all (no counter figure).
- ``http(s)://HOST:PORT/PATH``: one target; a path-less URL gets the engine's metrics path. A host
  name that resolves to several addresses expands to one target per address at the run's first
  scrape (as Prometheus' DNS service discovery does for a Kubernetes headless Service:
  loadgen/scrape/targets.py ``expand``).
- ``prometheus+http(s)://HOST:PORT``: a Prometheus server's HTTP API, queried at each window edge
  for the engine's counters, narrowed by ``--metrics-selector`` (e.g. ``{job="vllm"}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from loadgen.results.redact import redact_url

NONE = "none"
PROMETHEUS_SCHEMES = ("prometheus+http", "prometheus+https")
# a selector: `{name="value", ...}` with =, !=, =~, !~ matchers (PromQL's own syntax)
_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(r"^\{(" + _MATCHER + r"(," + _MATCHER + r")*,?)?\}$")


@dataclass(frozen=True, slots=True)
class MetricsTarget:
    """One place counters are read from. ``kind``: ``http`` (an exposition URL) or
    ``prometheus`` (a Prometheus server's API; ``selector`` narrows its series)."""

    kind: str
    url: str
    selector: str | None = None
    host: str | None = None  # the name the URL gave, when DNS expanded it to ``url``

    @property
    def label(self) -> str:
        """The target as every output shows it (credentials removed)."""
        return redact_url(self.url)


def parse_targets(values: list[str], selector: str | None, flag: str = "--metrics"
                  ) -> list[MetricsTarget] | None:
    """The run's targets: None when no ``--metrics`` was given (``<endpoint>/metrics``), []
    for ``--metrics none``. Raises ValueError with one line on a bad value. ``flag``: the
    option named in messages (another exporter's targets parse the same way)."""
    if not values:
        if selector is not None:
            raise ValueError(f"{flag}-selector needs {flag} prometheus+http://HOST:PORT")
        return None
    if NONE in values:
        if len(values) > 1:
            raise ValueError(f"{flag} none turns scraping off: give it alone")
        if selector is not None:
            raise ValueError(f"{flag}-selector needs {flag} prometheus+http://HOST:PORT")
        return []
    out: list[MetricsTarget] = []
    for v in values:
        parts = urlsplit(v)
        if parts.scheme in PROMETHEUS_SCHEMES:
            kind, scheme = "prometheus", parts.scheme.removeprefix("prometheus+")
        elif parts.scheme in ("http", "https"):
            kind, scheme = "http", parts.scheme
        else:
            raise ValueError(f"{flag} {redact_url(v)!r}: give http(s)://HOST:PORT[/PATH], "
                             f"prometheus+http(s)://HOST:PORT, or none")
        if not parts.hostname:
            raise ValueError(f"{flag} {redact_url(v)!r}: no host")
        try:
            parts.port  # noqa: B018 (a bad port raises here)
        except ValueError:
            raise ValueError(f"{flag} {redact_url(v)!r}: bad port") from None
        url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
        out.append(MetricsTarget(kind, url, selector if kind == "prometheus" else None))
    if selector is not None:
        if not any(t.kind == "prometheus" for t in out):
            raise ValueError(f"{flag}-selector needs {flag} prometheus+http://HOST:PORT")
        if not _SELECTOR.match(selector.strip()):
            raise ValueError(f"{flag}-selector {selector!r}: give a PromQL label selector, "
                             f"e.g. '{{job=\"vllm\"}}'")
    if len({t.url for t in out}) < len(out):
        raise ValueError(f"{flag}: a target is given twice (its counters would count twice)")
    return out
