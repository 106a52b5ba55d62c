"""Opening a connection to the endpoint: direct or through an HTTP proxy, plain or TLS.

Nothing here runs per event: the streaming transport (transport.py) asks a ``Connector`` for a
connected protocol and for the request target, and reads and writes bytes itself afterwards.

- TLS: certificates verified against the system trust store (``ssl.create_default_context``) or
  ``--ca-bundle FILE``; hostname checked; SNI; ALPN ``http/1.1``. ``--insecure`` turns
  verification off (the run warns loudly and the manifest records it).
- Proxies as curl finds them: ``--proxy URL``, else ``https_proxy``/``HTTPS_PROXY`` for https
  endpoints, ``http_proxy``/``HTTP_PROXY`` for http ones, then ``all_proxy``/``ALL_PROXY``
  (lower case first); ``no_proxy``/``NO_PROXY`` lists hosts that go direct. An https endpoint
  goes through a CONNECT tunnel (TLS runs end to end inside it, ``loop.start_tls``); an http one
  is sent to the proxy with an absolute-form request line. Proxy credentials come from the proxy
  URL (``http://user:pw@proxy:3128``) and are sent as ``proxy-authorization``, never shown.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from loadgen.client.endpoint import Endpoint, EndpointError, basic_auth, parse_endpoint
from loadgen.results.redact import redact_url

P = TypeVar("P", bound=asyncio.BaseProtocol)
CURL_PROXY_PORT = 1080  # curl's default when the proxy URL has no port


class TransportError(Exception):
    """The connection failed: refused, reset, closed early, TLS or proxy failure, or the
    response was not HTTP. The message is one line and carries no secret."""


class CertificateError(TransportError):
    """The server's TLS certificate did not verify."""


def tls_context(ca_bundle: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The client TLS context of a run (EndpointError for an unreadable CA bundle)."""
    try:
        ctx = ssl.create_default_context(cafile=ca_bundle)
    except FileNotFoundError:
        raise EndpointError(f"--ca-bundle {ca_bundle}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise EndpointError(f"--ca-bundle {ca_bundle}: not a PEM certificate file "
                            f"({exc.strerror or exc})") from None
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    auth_header: str | None = field(default=None, repr=False)
    url: str = field(default="", repr=False)  # with credentials: for httpx only

    @property
    def display(self) -> str:
        return redact_url(self.url)


def parse_proxy(url: str) -> Proxy:
    raw = url if "://" in url else f"http://{url}"  # curl: no scheme means http
    try:
        p = urlsplit(raw)
        port = p.port
    except ValueError:
        raise EndpointError(f"proxy {redact_url(raw)}: not a valid URL") from None
    if p.scheme.lower() != "http":
        raise EndpointError(f"proxy {redact_url(raw)}: only http:// proxies are supported")
    if not p.hostname:
        raise EndpointError(f"proxy {redact_url(raw)}: no host")
    auth = None
    if p.username is not None:
        auth = basic_auth(unquote(p.username), unquote(p.password or ""))
    port = port or CURL_PROXY_PORT
    if p.port is None:
        raw = raw.replace(p.netloc, f"{p.netloc}:{port}", 1)
    return Proxy(p.hostname, port, auth, raw)


def _env(env: Mapping[str, str], name: str) -> str | None:
    for key in (name.lower(), name.upper()):  # curl: lower case wins
        if key in env:
            return env[key]
    return None


def bypasses_proxy(ep: Endpoint, no_proxy: str) -> bool:
    """curl's NO_PROXY: ``*`` matches everything; a name matches itself and its subdomains
    (a leading dot is optional); an IP address or CIDR block matches addresses in it; an entry
    with ``:port`` matches that port only."""
    host = ep.host.lower().rstrip(".")
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        port = None
        if entry.startswith("["):  # [v6]:port
            inner, _, rest = entry[1:].partition("]")
            entry, port = inner, rest.lstrip(":") or None
        elif entry.count(":") == 1:
            entry, port = entry.split(":")
        if port is not None and port != str(ep.port):
            continue
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            name = entry.lstrip(".").rstrip(".")
            if host == name or host.endswith("." + name):
                return True
            continue
        try:
            if ipaddress.ip_address(host) in net:
                return True
        except ValueError:
            continue
    return False


def choose_proxy(ep: Endpoint, proxy: str | None,
                 environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy for ``ep``: ``--proxy`` (``""`` = none) or the environment, minus NO_PROXY."""
    env = os.environ if environ is None else environ
    if proxy is None:
        proxy = _env(env, f"{ep.scheme}_proxy") or _env(env, "all_proxy")
    if not proxy:
        return None
    if bypasses_proxy(ep, _env(env, "no_proxy") or ""):
        return None
    return parse_proxy(proxy)


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT up to the end of its headers."""

    def __init__(self) -> None:
        self.buf = b""
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf and not self.answer.done():
            self.answer.set_result(self.buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(TransportError("the proxy closed the connection during "
                                                     "CONNECT"))


class _Probe(asyncio.Protocol):
    transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


@dataclass(slots=True)
class Connector:
    """How the transport reaches one endpoint (see the module docstring)."""

    endpoint: Endpoint
    tls: ssl.SSLContext | None = None
    proxy: Proxy | None = None

    @classmethod
    def direct(cls, url: str) -> Connector:
        ep = parse_endpoint(url)
        return cls(ep, tls_context() if ep.tls else None, None)

    def target(self, path: str) -> str:
        """The request target: origin-form, or absolute-form to a proxy for http."""
        t = self.endpoint.target(path)
        if self.proxy is not None and not self.endpoint.tls:
            return f"http://{self.endpoint.authority}{t}"
        return t

    def head_lines(self) -> str:
        """Header lines this connection needs on every request (Host; proxy credentials for
        http through a proxy)."""
        lines = f"host: {self.endpoint.authority}\r\n"
        if self.proxy is not None and not self.endpoint.tls and self.proxy.auth_header:
            lines += f"proxy-authorization: {self.proxy.auth_header}\r\n"
        return lines

    async def check_certificate(self, timeout: float = 10.0) -> None:
        """Open and close one connection to an https endpoint: CertificateError (one line)
        when its certificate does not verify. Other failures are left to the requests."""
        if self.tls is None:
            return
        try:
            proto = await self.open(_Probe, timeout)
        except CertificateError:
            raise
        except TransportError:
            return
        if proto.transport is not None:
            proto.transport.close()

    async def open(self, factory: Callable[[], P], timeout: float) -> P:
        try:
            return await asyncio.wait_for(self._open(factory), timeout)
        except TimeoutError:
            raise TransportError(f"cannot connect to {self._where()}: timed out after "
                                 f"{timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise CertificateError(
                f"TLS certificate of {self.endpoint.host}:{self.endpoint.port} not trusted: "
                f"{exc.verify_message or exc.reason} (give --ca-bundle FILE with the CA that "
                "signed it, or --insecure)") from None
        except ssl.SSLError as exc:
            raise TransportError(f"TLS handshake with {self.endpoint.host}:{self.endpoint.port} "
                                 f"failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {self._where()}: "
                                 f"{exc.strerror or exc!r}") from None

    def _where(self) -> str:
        ep = self.endpoint
        if self.proxy is None:
            return f"{ep.host}:{ep.port}"
        return f"{ep.host}:{ep.port} through proxy {self.proxy.host}:{self.proxy.port}"

    async def _open(self, factory: Callable[[], P]) -> P:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        if self.proxy is None:
            _, proto = await loop.create_connection(
                factory, ep.host, ep.port, ssl=self.tls,
                server_hostname=ep.host if self.tls else None)
            return proto
        if not ep.tls:  # plain http: the proxy forwards absolute-form requests
            _, proto = await loop.create_connection(factory, self.proxy.host, self.proxy.port)
            return proto
        tr, tunnel = await loop.create_connection(_Tunnel, self.proxy.host, self.proxy.port)
        try:
            auth = (f"proxy-authorization: {self.proxy.auth_header}\r\n"
                    if self.proxy.auth_header else "")
            tr.write(f"CONNECT {ep.authority_with_port} HTTP/1.1\r\nhost: "
                     f"{ep.authority_with_port}\r\n{auth}\r\n".encode("latin-1"))
            answer = await tunnel.answer
            status = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
            parts = status.split(" ", 2)
            if len(parts) < 2 or not parts[1].startswith("2"):
                raise TransportError(f"proxy {self.proxy.host}:{self.proxy.port} refused "
                                     f"CONNECT to {ep.host}:{ep.port}: {status[:100]}")
            assert self.tls is not None
            tls_tr = await loop.start_tls(tr, tunnel, self.tls, server_hostname=ep.host)
        except BaseException:
            tr.abort()
            raise
        proto = factory()
        tls_tr.set_protocol(proto)
        proto.connection_made(tls_tr)
        return proto
