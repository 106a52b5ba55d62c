"""One instant query to a Prometheus server's HTTP API (``GET /api/v1/query``): the series it
returns with their labels and values. Kept apart so that every reader of a Prometheus server
(server telemetry; counters read through Prometheus) shares it."""

from __future__ import annotations

import httpx


async def instant_query(http: httpx.AsyncClient, base_url: str, query: str,
                        at_s: float | None = None) -> list[tuple[dict[str, str], float]]:
    """``(labels, value)`` of every series of an instant vector query (at ``at_s``, Unix
    seconds; default the server's now). Raises ``ValueError`` on an answer that is not a
    successful vector result, ``httpx.HTTPError`` on transport errors and error statuses."""
    params = {"query": query}
    if at_s is not None:
        params["time"] = f"{at_s:.3f}"
    resp = await http.get(base_url.rstrip("/") + "/api/v1/query", params=params)
    resp.raise_for_status()
    doc = resp.json()
    data = doc.get("data") if isinstance(doc, dict) else None
    if doc.get("status") != "success" or not isinstance(data, dict):
        raise ValueError(f"Prometheus query failed: {doc.get('error', 'no data')}")
    if data.get("resultType") != "vector":
        raise ValueError(f"Prometheus returned a {data.get('resultType')}, not a vector")
    return [(dict(r.get("metric") or {}), float(r["value"][1])) for r in data["result"]]
