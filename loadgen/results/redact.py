"""How a secret is kept out of every output: URLs without userinfo and query, header values
masked, known secret strings replaced. Used by the manifest, the summary's messages, sweep files
and the console."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def redact_url(url: str) -> str:
    """``url`` without ``user:password@``, query string and fragment (where tokens hide)."""
    try:
        p = urlsplit(url)
        host = host_for_url(p.hostname or "")
        port = p.port
    except ValueError:  # not a URL we can take apart: show nothing of it past the scheme
        return url.split("://", 1)[0] + "://" + MASK if "://" in url else MASK
    if port:
        host = f"{host}:{port}"
    return f"{p.scheme}://{host}{p.path}"


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted (argv entries such as ``--endpoint=URL``)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ***, and every URL in it redacted."""
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            text = text.replace(s, MASK)
    return redact_text(text)


def redact_header_spec(spec: str) -> str:
    name = spec.partition(":")[0].strip()
    return f"{name}: {MASK}"


def redact_config(obj: Any) -> Any:
    """A copy of a config (sweep YAML, run config) fit to write: every URL redacted, every
    ``headers`` entry masked."""
    if isinstance(obj, dict):
        return {k: ([redact_header_spec(h) for h in v] if k == "headers" and isinstance(v, list)
                    else redact_config(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_config(v) for v in obj]
    if isinstance(obj, str) and "://" in obj:
        return redact_text(obj)
    return obj
