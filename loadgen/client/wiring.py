"""Everything a run needs to talk to its endpoint, built once from the RunConfig: the parsed
endpoint, the headers of every request, the connector (TLS, proxy), the streaming client and the
httpx client for probes and scrapes (same headers, query parameters, TLS and proxy), and the
secrets that must never appear in a message or file."""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from loadgen.client.connect import Connector, choose_proxy, tls_context
from loadgen.client.endpoint import Endpoint, parse_endpoint, request_headers
from loadgen.client.transport import HttpClient
from loadgen.config import RunConfig
from loadgen.results.redact import scrub

INSECURE_WARNING = ("--insecure: the server's TLS certificate is NOT verified; anyone on the "
                    "path could read or alter this run's traffic")


@dataclass(slots=True)
class Wire:
    endpoint: Endpoint
    headers: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    connector: Connector
    notices: list[str] = field(default_factory=list)  # warnings to show before the run

    def stream_client(self) -> HttpClient:
        return HttpClient(headers=self.headers, connector=self.connector)

    def http_client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        proxy = self.connector.proxy
        return httpx.AsyncClient(
            base_url=self.endpoint.base_url, headers=self.headers,
            params=list(self.endpoint.query), timeout=timeout, trust_env=False,
            verify=self.connector.tls or default_verify(), proxy=proxy.url if proxy else None)

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)


@functools.cache
def default_verify() -> ssl.SSLContext:
    """httpx's own default for ``verify=True`` in a client with ``trust_env=False`` (certifi's
    CAs), built once per process: building it reads every CA certificate, ~0.1 s of CPU that
    each run's probe and scrape client paid again."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


def build_wire(cfg: RunConfig) -> Wire:
    """EndpointError (a ValueError) for a URL, header, CA bundle or proxy the run cannot use."""
    ep = parse_endpoint(cfg.endpoint.url)
    hdrs = request_headers(ep, cfg.endpoint.api_key_env, cfg.endpoint.headers)
    proxy = choose_proxy(ep, cfg.tls.proxy)
    tls = tls_context(cfg.tls.ca_bundle, cfg.tls.insecure) if ep.tls else None
    secrets = list(hdrs.secrets)
    if proxy is not None and proxy.auth_header:
        pw = urlsplit(proxy.url).password
        secrets += [proxy.auth_header, proxy.auth_header.split(" ", 1)[1], *([pw] if pw else [])]
    notices = [INSECURE_WARNING] if ep.tls and cfg.tls.insecure else []
    return Wire(ep, hdrs.headers, tuple(secrets), Connector(ep, tls, proxy), notices)
