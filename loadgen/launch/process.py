"""Run an engine server as a child process: start, wait until healthy, stop cleanly.

The child gets its own session (so its own process group): stopping sends SIGTERM to the whole
group (vLLM and SGLang fork workers), waits ``grace`` seconds, then SIGKILLs the group. Output goes
to a log file whose tail is put into every start-up error. Use it as a context manager::

    with EngineProcess(argv, engine="llamacpp", base_url="http://127.0.0.1:8080") as eng:
        ...  # healthy here; stopped on exit, on exception and on Ctrl-C
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

DEFAULT_GRACE_S = 10.0
DEFAULT_HEALTH_TIMEOUT_S = 600.0


class EngineError(RuntimeError):
    """The engine failed to start, died, or never became healthy."""


class EngineStartError(EngineError):
    """The child exited before it became healthy."""


class HealthTimeout(EngineError):
    """The child is alive but did not become healthy in time."""


_LIVE: weakref.WeakSet[EngineProcess] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(grace=3.0)


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    # If loadgen itself is killed hard, the engine gets SIGTERM instead of running on forever.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def tail_text(path: Path | None, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log file ('' if missing)."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:])


class EngineProcess:
    """One engine server child process."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        engine: str,
        base_url: str,
        health_path: str = "/health",
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        sd: Mapping[str, Any] | None = None,
        model: str | None = None,
        config_files: Mapping[str, str] | None = None,
        info: Mapping[str, Any] | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
    ) -> None:
        if isinstance(argv, str):
            raise TypeError("argv must be a list of strings, not a shell string")
        self.argv = [str(a) for a in argv]
        self.engine = engine
        self.base_url = base_url.rstrip("/")
        self.health_path = health_path
        self.log_path = Path(log_path) if log_path else None
        self.env = dict(env) if env else None
        self.sd = dict(sd) if sd else {"method": "none"}
        self.model = model
        self.config_files = dict(config_files or {})
        self.info = dict(info or {})  # static facts for the manifest (e.g. how it was built)
        self.grace_s = grace_s
        self.health_timeout_s = health_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.started_at: float | None = None  # wall clock, for the manifest
        self.startup_s: float | None = None  # start -> healthy, monotonic
        self._t0: float | None = None
        self._version: dict[str, Any] | None = None
        self._log_fh: Any = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def health_url(self) -> str:
        return self.base_url + self.health_path

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> EngineProcess:
        if self.proc is not None:
            raise EngineError(f"{self.engine} already started (pid {self.proc.pid})")
        env = None
        if self.env is not None:
            env = {**os.environ, **self.env}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_fh = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
            out: Any = self._log_fh
        else:
            out = subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
                preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
            )
        except OSError as exc:
            self._close_log()
            raise EngineStartError(f"cannot start {self.engine}: {self.argv[0]}: {exc}") from exc
        self.started_at = time.time()
        self._t0 = time.monotonic()
        _LIVE.add(self)
        return self

    def _died_error(self) -> EngineStartError:
        assert self.proc is not None
        rc = self.proc.returncode
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with {rc}"
        return EngineStartError(
            f"{self.engine} {how} before becoming healthy ({self.health_url}).\n"
            f"command: {' '.join(self.argv)}\nlog: {self.log_path}\n"
            f"--- last lines of the log ---\n{self.log_tail()}"
        )

    def wait_healthy(self, timeout_s: float | None = None, poll_s: float = 0.25) -> float:
        """Block until GET health answers 200. Returns seconds since start.

        503 (loading) and refused connections mean "not yet". Raises :class:`EngineStartError` if
        the child exits first and :class:`HealthTimeout` after ``timeout_s``; both carry the log
        tail. The child is left running on timeout: the caller (or ``__exit__``) stops it.
        """
        if self.proc is None:
            raise EngineError("start() first")
        timeout_s = self.health_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=httpx.Timeout(5.0, connect=1.0), trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise self._died_error()
                try:
                    resp = client.get(self.health_url)
                    if resp.status_code == 200:
                        break
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}"
                if time.monotonic() >= deadline:
                    raise HealthTimeout(
                        f"{self.engine} not healthy after {timeout_s:.0f} s at {self.health_url} "
                        f"(last: {last}).\nlog: {self.log_path}\n"
                        f"--- last lines of the log ---\n{self.log_tail()}"
                    )
                time.sleep(poll_s)
        assert self._t0 is not None
        self.startup_s = time.monotonic() - self._t0
        return self.startup_s

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` s. Idempotent; returns the code."""
        grace = self.grace_s if grace is None else grace
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(timeout=10)
        # Workers that outlived the leader (same group) get the same treatment.
        self._signal_group(signal.SIGKILL)
        self.returncode = proc.returncode
        _LIVE.discard(self)
        self._close_log()
        return self.returncode

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # pgid == pid (start_new_session)

    def _close_log(self) -> None:
        if self._log_fh is not None:
            with contextlib.suppress(OSError):
                self._log_fh.close()
            self._log_fh = None

    def log_tail(self, lines: int = 40) -> str:
        if self._log_fh is not None:
            with contextlib.suppress(OSError):
                self._log_fh.flush()
        return tail_text(self.log_path, lines)

    def __enter__(self) -> EngineProcess:
        if self.proc is None:
            self.start()
        try:
            if self.startup_s is None:
                self.wait_healthy()
            self.probe_version()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to exit by itself (None on timeout)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    # ------------------------------------------------------------------ manifest
    def probe_version(self) -> dict[str, Any]:
        """Ask the running server what it is (cached). Never raises."""
        if self._version is None:
            self._version = probe_version(self.engine, self.base_url)
        return self._version

    def describe(self) -> dict[str, Any]:
        """What a run manifest records about this engine."""
        return {
            "engine": self.engine,
            "model": self.model,
            "command": list(self.argv),
            "config_files": dict(self.config_files),
            "base_url": self.base_url,
            "health_url": self.health_url,
            "version": self.probe_version() if self.alive() else self._version,
            "build": dict(self.info),
            "sd": dict(self.sd),
            "pid": self.pid,
            "log": str(self.log_path) if self.log_path else None,
            "started_at": self.started_at,
            "startup_s": self.startup_s,
        }


def _get_json(client: httpx.Client, url: str) -> Any:
    try:
        resp = client.get(url)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


def probe_version(engine: str, base_url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Version information from a live server: {"version": str|None, "source": endpoint, ...}."""
    base_url = base_url.rstrip("/")
    out: dict[str, Any] = {"version": None, "source": None}
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        if engine == "llamacpp":
            props = _get_json(client, base_url + "/props")
            if isinstance(props, dict):
                out.update(version=props.get("build_info"), source="/props",
                           model_path=props.get("model_path"),
                           total_slots=props.get("total_slots"))
                gen = props.get("default_generation_settings")
                if isinstance(gen, dict) and "n_ctx" in gen:
                    out["n_ctx"] = gen["n_ctx"]
        else:
            paths = ["/version"]
            if engine == "sglang":
                paths = ["/server_info", "/get_server_info", "/version"]
            for path in paths:
                data = _get_json(client, base_url + path)
                if isinstance(data, dict) and data.get("version"):
                    out.update(version=str(data["version"]), source=path)
                    break
        models = _get_json(client, base_url + "/v1/models")
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            out["served_models"] = [m.get("id") for m in models["data"] if isinstance(m, dict)]
    return out
