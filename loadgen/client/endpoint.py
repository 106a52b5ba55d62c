"""The endpoint of a run, parsed once, and the headers sent with every request.

``parse_endpoint(url)`` takes the URL apart a single time: where to connect (scheme, host, port),
what to put on every request line (base path, the URL's query parameters), what to send with
every request (``user:password@`` becomes a Basic ``authorization`` header) and how the URL may be
shown (``display``: no userinfo, no query). The streaming transport, the httpx client used for
probes and scrapes, and the manifest all use this one parse, so a secret in the URL is sent where
it belongs and shown nowhere.

Headers (``--header 'Name: value'``, ``--api-key-env VAR``) are checked here for CR/LF: a value
that would add header lines to the request is refused before anything is sent.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from loadgen.results.redact import host_for_url, redact_url

DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 token: the characters a header name may use
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
ENV_PREFIX = "env:"


class EndpointError(ValueError):
    """A URL or header the run cannot use; the message never carries a secret."""


def basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "http" or "https"
    host: str  # without IPv6 brackets, as sockets and SNI want it
    port: int
    base_path: str  # "" or "/v1"-like, no trailing slash
    query: tuple[tuple[str, str], ...] = ()
    auth_header: str | None = field(default=None, repr=False)  # from user:password@
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """host[:port] as the Host header and an absolute URL write it (default port omitted)."""
        h = host_for_url(self.host)
        return h if DEFAULT_PORTS[self.scheme] == self.port else f"{h}:{self.port}"

    @property
    def authority_with_port(self) -> str:
        """host:port, always with the port (a CONNECT request's target)."""
        return f"{host_for_url(self.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """scheme://host[:port]/base: no userinfo, no query (httpx's base_url)."""
        return f"{self.scheme}://{self.authority}{self.base_path}"

    @property
    def display(self) -> str:
        """The form every message and file shows."""
        return self.base_url

    @property
    def query_string(self) -> str:
        return urlencode(self.query) if self.query else ""

    def target(self, path: str) -> str:
        """The origin-form request target for ``path``: base path, path, the URL's query."""
        qs = self.query_string
        if not qs:
            return f"{self.base_path}{path}"
        return f"{self.base_path}{path}{'&' if '?' in path else '?'}{qs}"


def parse_endpoint(url: str) -> Endpoint:
    """Take ``url`` apart once (see the module docstring); EndpointError names it redacted."""
    shown = redact_url(url)
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError as exc:
        raise EndpointError(f"{shown}: not a valid URL ({exc})") from None
    scheme = (p.scheme or "").lower()
    if scheme not in DEFAULT_PORTS:
        raise EndpointError(f"{shown}: the endpoint must be an http:// or https:// URL")
    if not p.hostname:
        raise EndpointError(f"{shown}: no host in the endpoint URL")
    secrets: list[str] = []
    auth = None
    if p.username is not None or p.password is not None:
        user, password = unquote(p.username or ""), unquote(p.password or "")
        check_header_value("the URL's user:password", user + password)
        auth = basic_auth(user, password)
        secrets += [s for s in (p.password, password, auth.split(" ", 1)[1]) if s]
    query = tuple(parse_qsl(p.query, keep_blank_values=True))
    for _, v in query:
        if v:
            secrets += [v, quote(v, safe=""), urlencode({"": v})[1:]]
    return Endpoint(scheme=scheme, host=p.hostname, port=port or DEFAULT_PORTS[scheme],
                    base_path=p.path.rstrip("/"), query=query, auth_header=auth,
                    secrets=tuple(dict.fromkeys(secrets)))


def check_header_value(what: str, value: str) -> None:
    """Refuse a value that would end the header line (CR, LF) or the string (NUL)."""
    if any(c in value for c in "\r\n\0"):
        raise EndpointError(f"{what} contains a CR, LF or NUL character; refusing to send it "
                            "(it would add lines to the request's headers)")


def parse_header(spec: str, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """``'Name: value'`` -> (name, value). ``'Name: env:VAR'`` takes the value from the
    environment variable VAR (so it is never on a command line)."""
    env = os.environ if environ is None else environ
    name, sep, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        # the text is not echoed: without its colon, a header's value (a key) is in it
        raise EndpointError("--header: expected 'Name: value' with a valid header name (the "
                            "text given is not shown: it may hold a secret)")
    if value.startswith(ENV_PREFIX):
        var = value[len(ENV_PREFIX):]
        if var not in env or not env[var]:
            raise EndpointError(f"--header {name}: environment variable {var} is not set")
        value = env[var]
    check_header_value(f"--header {name}", value)
    return name, value


@dataclass(slots=True)
class RequestHeaders:
    """The headers of every request (streamed or not), and every secret among them."""

    headers: dict[str, str]
    secrets: tuple[str, ...]


def request_headers(endpoint: Endpoint, api_key_env: str | None, header_specs: Iterable[str],
                    environ: dict[str, str] | None = None) -> RequestHeaders:
    """Authorization from the URL's userinfo, overridden by ``--api-key-env`` (Bearer), then
    by an explicit ``--header Authorization: ...``. Every header value counts as a secret."""
    env = os.environ if environ is None else environ
    headers: dict[str, str] = {}
    if endpoint.auth_header:
        headers["authorization"] = endpoint.auth_header
    if api_key_env:
        key = env.get(api_key_env)
        if not key:
            raise EndpointError(f"environment variable {api_key_env} is not set")
        check_header_value(f"the API key in {api_key_env}", key)
        headers["authorization"] = f"Bearer {key}"
    for spec in header_specs:
        name, value = parse_header(spec, env)
        headers[name.lower()] = value
    secrets = list(endpoint.secrets)
    for v in headers.values():
        secrets.append(v)
        if " " in v:  # "Bearer KEY": the key alone may be echoed back too
            secrets.append(v.split(" ", 1)[1])
    return RequestHeaders(headers, tuple(s for s in dict.fromkeys(secrets) if len(s) >= 3))
