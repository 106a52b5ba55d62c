"""Unlike conditions: what differs between two runs beyond the thing compared, named beside the
verdicts it affects (docs/COMPARE.md, "Unlike conditions").

Each condition has a kind, one line that says how A and B differ, and the statistics it bears
on (``AFFECTS``, prefixes of compare/core.py's statistic keys; ``*`` = every statistic):

- ``prefix_cache``: the runs' prefix-cache policy (salted, flushed, disabled, kept, unprotected)
  or window hit rate differ (by more than ``HIT_RATE_TOLERANCE``): prefill partly served from
  cache lowers TTFT (and E2E, throughput);
- ``prompts``: different prompt files, tokenizers or chat templates, or text sent to the
  server's own chat template on one side and token ids rendered by the file's on the other;
- ``output_lengths``: requests stopped before their requested length on one side (EOS honoured:
  ``ignore_eos`` not obeyed) or a different mean output length;
- ``sampling``: different temperature / top-p / top-k / seeds;
- ``transport``: TLS, a forward proxy (``--proxy``) or a local reverse proxy in front of the
  engine on one side only;
- ``token_counts``: tokens counted differently (the engine's ids or counts, the final usage
  spread over text events, a client-side tokenizer on the text), or engines whose tokenizers
  cut the same text into different numbers of tokens (tokenizer-neutral counts per engine
  token): tokens/s and per-token latencies are then in different units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from loadgen.compare.load import RunData
from loadgen.engines.sampling import sampling_label

HIT_RATE_TOLERANCE = 0.05  # prefix-cache hit rates further apart than this are unlike
LENGTH_TOLERANCE = 0.01  # relative difference of the mean output length of ok requests
NEUTRAL_TOLERANCE = 0.05  # relative difference of neutral tokens per engine token

_THROUGHPUT = ("output_tokens_per_s", "requests_per_s")
AFFECTS: dict[str, tuple[str, ...]] = {
    "prefix_cache": ("ttft_ms", "e2e_ms", *_THROUGHPUT),
    "prompts": ("*",),
    "output_lengths": (*_THROUGHPUT, "per_user_tokens_per_s", "tpot_ms", "itl_ms", "e2e_ms",
                       "category"),
    "sampling": ("*",),
    "transport": ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "per_user_tokens_per_s"),
    "token_counts": ("output_tokens_per_s", "per_user_tokens_per_s", "tpot_ms", "itl_ms",
                     "al_", "acceptance_rate", "category"),
}


@dataclass(frozen=True, slots=True)
class Unlike:
    kind: str
    text: str
    affects: tuple[str, ...]

    def applies(self, key: str) -> bool:
        return any(p == "*" or key.startswith(p) for p in self.affects)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unlike_for(conditions: list[dict[str, Any]], key: str) -> list[str]:
    """The kinds of the conditions (as in a result's ``conditions``) that bear on ``key``."""
    return [c["kind"] for c in conditions
            if any(p == "*" or key.startswith(p) for p in c["affects"])]


def verdict_mark(kinds: list[str], key: str) -> str:
    """What follows a verdict affected by unlike conditions; a TTFT verdict across different
    cache conditions says so in full."""
    if not kinds:
        return ""
    if "prefix_cache" in kinds and key.startswith("ttft"):
        rest = [k for k in kinds if k != "prefix_cache"]
        return " (not like for like: prefix cache differs" + (
            f"; unlike {', '.join(rest)})" if rest else ")")
    return f" (unlike: {', '.join(kinds)})"


def _summary(r: RunData, *path: str) -> Any:
    obj: Any = r.summary or {}
    for p in path:
        obj = obj.get(p) if isinstance(obj, dict) else None
    return obj


def _cache(r: RunData) -> str:
    pc = _summary(r, "prefix_cache") or {}
    rate = pc.get("hit_rate")
    hits = f"{rate:.0%} hits" if rate is not None else "no hit counters"
    return f"{pc.get('policy') or 'policy unknown'} ({hits})"


def prefix_cache(a: RunData, b: RunData) -> str | None:
    pa, pb = _summary(a, "prefix_cache") or {}, _summary(b, "prefix_cache") or {}
    if not (a.summary and b.summary):
        return None
    ra, rb = pa.get("hit_rate"), pb.get("hit_rate")
    far = ra is not None and rb is not None and abs(ra - rb) > HIT_RATE_TOLERANCE
    if pa.get("policy") == pb.get("policy") and not far:
        return None
    return f"prefix cache: A {_cache(a)}, B {_cache(b)}"


def _sends_text(r: RunData) -> bool | None:
    if not r.measured:
        return None
    return sum(bool(x.get("text_prompt")) for x in r.measured) * 2 > len(r.measured)


def prompts(a: RunData, b: RunData) -> str | None:
    why = []
    da = (a.manifest or {}).get("dataset") or {}
    db = (b.manifest or {}).get("dataset") or {}
    if da.get("sha256") and db.get("sha256") and da["sha256"] != db["sha256"]:
        why.append(f"prompt files {da.get('path')} vs {db.get('path')}")
    ha, hb = da.get("header") or {}, db.get("header") or {}
    # (a text prompt file names no tokenizer: its side's tokens are the server's)
    if ha.get("tokenizer") and hb.get("tokenizer") and ha["tokenizer"] != hb["tokenizer"]:
        why.append(f"tokenizers {ha.get('tokenizer')!r} vs {hb.get('tokenizer')!r}")
    ta = (ha.get("chat_template") or {}).get("sha256") if isinstance(
        ha.get("chat_template"), dict) else None
    tb = (hb.get("chat_template") or {}).get("sha256") if isinstance(
        hb.get("chat_template"), dict) else None
    if ta != tb and ta and tb:
        why.append(f"chat templates {ta[:12]}… vs {tb[:12]}…")
    sa, sb = _sends_text(a), _sends_text(b)
    if sa is not None and sb is not None and sa != sb:
        side = "A" if sa else "B"
        why.append(f"{side} sends text (the server's chat template makes its tokens), the other "
                   f"token ids (the prompt file's template)")
    return f"prompts: {'; '.join(why)}" if why else None


def _early(r: RunData) -> int:
    return sum(1 for x in r.measured
               if x.get("output_tokens", 0) < x.get("expected_tokens", 0)
               and (x.get("finish_reason") in ("stop", "eos", "stop_token")
                    or (x.get("error") or "").startswith("output length")))


def output_lengths(a: RunData, b: RunData) -> str | None:
    ea, eb = _early(a), _early(b)
    ma = float(a.tokens.mean()) if a.tokens.size else None
    mb = float(b.tokens.mean()) if b.tokens.size else None
    far = ma is not None and mb is not None and abs(ma - mb) > LENGTH_TOLERANCE * max(ma, mb)
    if (ea > 0) == (eb > 0) and not far:
        return None

    def side(r: RunData, n: int, m: float | None) -> str:
        stopped = (f"{n} of {len(r.measured)} requests stopped before their length (EOS "
                   f"honoured)" if n else "every request ran to its length")
        return stopped + (f", {m:.1f} output tokens per ok request" if m is not None else "")

    return f"output lengths: A {side(a, ea, ma)}; B {side(b, eb, mb)}"


def sampling(a: RunData, b: RunData) -> str | None:
    from loadgen.compare.comparability import sampling_of

    if not (a.manifest and b.manifest):
        return None
    la, lb = sampling_label(sampling_of(a.config)), sampling_label(sampling_of(b.config))
    return None if la == lb else f"sampling: A {la}, B {lb}"


def _transport(r: RunData) -> str:
    parts = []
    endpoint = str((r.manifest or {}).get("endpoint") or "")
    parts.append("TLS" if endpoint.lower().startswith("https:") else "plain HTTP")
    if r.config.get("proxy"):
        parts.append(f"through the proxy {r.config['proxy']}")
    host = _summary(r, "host") or {}
    if host.get("proxy_pid"):
        parts.append(f"a local reverse proxy in front (pid {host['proxy_pid']})")
    return ", ".join(parts)


def transport(a: RunData, b: RunData) -> str | None:
    if not (a.manifest and b.manifest):
        return None
    ta, tb = _transport(a), _transport(b)
    return None if ta == tb else f"transport: A {ta}; B {tb}"


COUNT_SOURCES = {
    None: "the engine's token ids or counts",
    "token_ids": "the token ids in the stream",
    "continuous_usage": "the server's running usage counts",
    "events+final_usage": "the server's final usage spread over its text events",
    "tokenizer_on_text": "a client-side tokenizer on the streamed text",
}


def token_counts(a: RunData, b: RunData) -> str | None:
    if not (a.summary and b.summary):
        return None
    why = []
    ca, cb = _summary(a, "token_count_source"), _summary(b, "token_count_source")
    if ca != cb:
        why.append(f"A counts {COUNT_SOURCES.get(ca, ca)}, B {COUNT_SOURCES.get(cb, cb)}")
    na = _summary(a, "throughput", "neutral_tokens_per_engine_token")
    nb = _summary(b, "throughput", "neutral_tokens_per_engine_token")
    if na and nb and abs(na - nb) > NEUTRAL_TOLERANCE * max(na, nb):
        sa = _summary(a, "throughput", "neutral_output_tokens_per_s")
        sb = _summary(b, "throughput", "neutral_output_tokens_per_s")
        why.append(f"the engines' tokens differ in size ({na:.2f} vs {nb:.2f} tokenizer-neutral "
                   f"tokens per engine token; neutral output tokens/s {_num(sa)} vs {_num(sb)})")
    return f"token counts: {'; '.join(why)}" if why else None


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


CHECKS: tuple[tuple[str, Callable[[RunData, RunData], str | None]], ...] = (
    ("prefix_cache", prefix_cache), ("prompts", prompts), ("output_lengths", output_lengths),
    ("sampling", sampling), ("transport", transport), ("token_counts", token_counts),
)


def unlike_conditions(a: RunData, b: RunData) -> list[Unlike]:
    """Every unlike condition between A and B, in ``CHECKS`` order."""
    out = []
    for kind, check in CHECKS:
        text = check(a, b)
        if text:
            out.append(Unlike(kind, text, AFFECTS[kind]))
    return out
