"""The run's probe and scrape client (loadgen/client/wiring.py): certificates verified as httpx
verifies them by default, with one context per process instead of one per run."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from loadgen.client.wiring import build_wire, default_verify
from loadgen.config import RunConfig


def test_default_verification_is_httpx_own_built_once():
    ctx = default_verify()
    assert ctx is default_verify()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    fresh = httpx.create_ssl_context(verify=True, trust_env=False)
    assert ctx.cert_store_stats() == fresh.cert_store_stats()
    assert ctx.cert_store_stats()["x509_ca"] > 0


def test_plain_http_endpoints_share_it_and_https_keeps_its_own(tmp_path: Path):
    def wire(url: str, **tls):
        return build_wire(RunConfig.build(endpoint=url, engine="vllm", out=tmp_path,
                                          concurrency=1, num_requests=1, **tls))

    def pool_context(w) -> ssl.SSLContext:  # the context httpx's connection pool will use
        return w.http_client()._transport._pool._ssl_context

    a, b = wire("http://127.0.0.1:1"), wire("http://127.0.0.1:2/v1")
    assert a.connector.tls is None and b.connector.tls is None
    assert pool_context(a) is default_verify() and pool_context(b) is default_verify()
    insecure = wire("https://127.0.0.1:3", insecure=True)
    assert pool_context(insecure) is insecure.connector.tls
    assert insecure.connector.tls.verify_mode == ssl.CERT_NONE
