"""Per-request records: one JSON line each in ``requests.jsonl``, appended as requests finish."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from loadgen.results.files import ResultFileError

OK, ERROR, CANCELLED = "ok", "error", "cancelled"


@dataclass(slots=True)
class RequestRecord:
    """All times are ``time.monotonic_ns()`` of this host (the clock the synthetic engine's truth
    log uses too), so records can be checked against a server's own send stamps."""

    index: int
    prompt_id: str
    category: str
    turn: int
    warmup: bool
    input_tokens: int
    expected_tokens: int
    scheduled_ns: int
    send_ns: int = 0
    connect_ns: int = 0  # duration (ns) of the connect this request waited for; 0 = reused
    headers_ns: int = 0
    first_token_ns: int = 0
    end_ns: int = 0
    status: str = CANCELLED
    error: str | None = None
    http_status: int | None = None
    retry_after: str | None = None
    output_tokens: int = 0
    events: int = 0
    arrivals_ns: list[int] = field(default_factory=list)
    event_tokens: list[int] = field(default_factory=list)
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    finish_reason: str | None = None
    sd: dict[str, Any] | None = None  # per-request SD as the engine reported it
    acceptance_length: float | None = None  # per-request AL (docs/METRICS.md)
    token_ids: list[int] | None = None
    neutral_output_tokens: int | None = None  # the output text in a neutral encoding
    text_prompt: bool = False  # sent as text (input_tokens is then the server's count)
    seed: int | None = None  # the per-request sampling seed sent (--seed-per-request)
    retries: int = 0  # resends after a 429 (--retry-429)
    resent: bool = False  # sent again on a new connection: the server closed the kept-alive
    # connection it was written to before answering (docs/METRICS.md, connections)
    reasoning_tokens: int | None = None  # of output_tokens: reasoning deltas (text endpoints)
    # how long the request waited inside the client from its turn to send_ns (encode, the
    # loop's other work when many streams start together): docs/METRICS.md, "send_delay"
    send_delay_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A shallow dict: its lists are the record's own (no copy of the per-event stamps)."""
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


class RecordWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, rec: dict[str, Any]) -> None:
        """Append one record (RequestRecord.to_dict()) and flush it to the file."""
        if self._fh is None:
            raise RuntimeError("record writer is closed")
        try:
            self._fh.write(orjson.dumps(rec).decode() + "\n")
            self._fh.flush()
        except OSError:  # disk full: the writer is done (close() must not raise it again)
            self.close()
            raise

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):  # a failed flush was already reported by write
                fh.close()


def write_failure(path: Path, exc: OSError) -> str:
    """Why a run stopped when a record could not be appended to ``path`` (a full disk)."""
    return f"cannot write a record to {path} ({exc.strerror or exc}); the run was stopped"


class CorruptRecords(ResultFileError):
    """requests.jsonl has a malformed line before its last."""


def iter_records(path: Path | str, torn: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """The records of a requests.jsonl in file order, streamed. The LAST non-blank line may be
    torn (a process killed while appending it): it is skipped, and its line number appended to
    ``torn`` when given. A malformed line anywhere before it is corruption: ``CorruptRecords``
    naming the file and the line (1-based)."""
    path = Path(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot open ({exc.strerror})") from None
    bad: int | None = None
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if bad is not None:
                raise CorruptRecords(f"{path}:{bad}: not valid JSON (only a torn last line "
                                     f"is tolerated)")
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad = lineno
                continue
            if not isinstance(rec, dict):
                raise CorruptRecords(f"{path}:{lineno}: not a JSON record")
            yield rec
    if bad is not None and torn is not None:
        torn.append(bad)


def read_records(path: Path | str, torn: list[int] | None = None) -> list[dict[str, Any]]:
    """``iter_records`` as a list."""
    return list(iter_records(path, torn))


REQUESTS = "requests.jsonl"  # a single process's records
SHARD_GLOB = "requests.*.jsonl"  # worker k's records: requests.<k>.jsonl (docs/FORMATS.md)


def record_files(run_dir: Path | str) -> list[Path]:
    """A run directory's record files: requests.jsonl and every worker shard
    requests.<k>.jsonl (in worker order). Empty when there are none."""
    run_dir = Path(run_dir)
    shards = sorted((p for p in run_dir.glob(SHARD_GLOB) if p.name.split(".")[1].isdigit()),
                    key=lambda p: int(p.name.split(".")[1]))
    single = run_dir / REQUESTS
    return ([single] if single.is_file() else []) + shards


def iter_run_records(run_dir: Path | str,
                     torn: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Every record of a run directory, file after file, streamed (``iter_records`` rules per
    file: each shard's last line may be torn)."""
    files = record_files(run_dir)
    if not files:
        raise ResultFileError(f"{run_dir}: no {REQUESTS} or {SHARD_GLOB}")
    for path in files:
        yield from iter_records(path, torn)


def read_run_records(run_dir: Path | str,
                     torn: list[int] | None = None) -> list[dict[str, Any]]:
    """``iter_run_records`` as a list."""
    return list(iter_run_records(run_dir, torn))
