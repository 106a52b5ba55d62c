"""What every synthetic protocol shares: health with a loading phase, Prometheus rendering."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from loadgen.synthetic.http import Connection, Request, Response

if TYPE_CHECKING:
    from loadgen.synthetic.wire import Host, Route


def family(kind: type, name: str, doc: str, value: float,
           labels: dict[str, str] | None = None) -> Metric:
    """One Prometheus metric family with a single sample (``kind``: a *MetricFamily class)."""
    labels = labels or {}
    m = kind(name, doc, labels=list(labels))
    m.add_metric(list(labels.values()), value)
    return m


class _Collector:
    def __init__(self, protocol: BaseProtocol) -> None:
        self._protocol = protocol

    def collect(self) -> Iterable[Metric]:
        return self._protocol.metric_families()


class BaseProtocol:
    name = "base"
    # llama-server closes the connection after every streamed response, keep-alive or not
    close_after_stream = False
    # whether a stream ends with `data: [DONE]` (llama.cpp's native stream does not)
    stream_done_marker = True

    def __init__(self, server: Host) -> None:
        self.server = server
        self.engine = server.engine
        self.cfg = server.cfg
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self))

    # Subclasses extend these.
    def routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("GET", "/health"): self.health,
            ("GET", "/v1/models"): self.models,
            ("GET", "/metrics"): self.metrics,
        }

    def error(self, status: int, message: str) -> Response:
        return Response.json(status, {"error": {"message": message, "code": status}})

    def metric_families(self) -> Iterable[Metric]:
        return ()

    # Shared handlers.
    async def health(self, req: Request, conn: Connection) -> Response:
        if self.server.loading:
            return self.error(503, "loading")
        return Response(200, b"", "text/plain")

    async def models(self, req: Request, conn: Connection) -> Response:
        body: dict[str, Any] = {"object": "list", "data": [{
            "id": self.cfg.model_name, "object": "model", "created": 0,
            "owned_by": self.name, "root": self.cfg.model_name,
            "max_model_len": self.cfg.max_model_len,
        }]}
        return Response.json(200, body)

    async def metrics(self, req: Request, conn: Connection) -> Response:
        return Response(200, generate_latest(self._registry),
                        "text/plain; version=0.0.4; charset=utf-8")

    def version_string(self) -> str:
        from loadgen import __version__

        return f"loadgen-synthetic-{__version__}"
