"""Which local process serves a loopback endpoint: the listener on its port, or, when that
listener is a reverse proxy (nginx, ...), the process the proxy forwards to.

The engine behind a local proxy is found, in order, from:

1. the proxy's established connections: a connection from the proxy's processes to another
   loopback port on which a process outside the proxy listens names that process (there are
   some once a request has gone through, or with upstream keep-alive);
2. the proxy's configuration (nginx: the ``-c`` file of its command line, or its default
   ``/etc/nginx/nginx.conf``, with its ``include`` files): the ``server`` block that listens on
   the endpoint's port and its ``proxy_pass`` target (an ``upstream`` block's first server
   too), when that target is a loopback port with a listener.

What was followed is kept (``followed``) so the host monitor counts the proxy's CPU apart from
"others" and says how the engine was found (docs/METRICS.md, "Host").
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
NGINX_DEFAULT_CONF = Path("/etc/nginx/nginx.conf")


@dataclass(frozen=True, slots=True)
class Followed:
    """An engine found behind a local proxy."""

    engine_pid: int
    proxy_pid: int
    proxy_name: str
    how: str  # "connections" | "config <file>"

    @property
    def note(self) -> str:
        return (f"the endpoint's listener is {self.proxy_name} (pid {self.proxy_pid}); the "
                f"engine is pid {self.engine_pid}, found from the proxy's {self.how}")


_FOLLOWED: dict[int, Followed] = {}


def followed(engine_pid: int | None) -> Followed | None:
    """How ``pid_listening_on`` reached this engine PID through a proxy, if it did."""
    return _FOLLOWED.get(engine_pid) if engine_pid is not None else None


def _port_of(endpoint: str) -> int | None:
    try:
        u = urlsplit(endpoint)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return None
    return port if u.hostname in LOOPBACK_HOSTS else None


def pid_listening_on(endpoint: str) -> int | None:
    """The PID of the engine serving a loopback endpoint (one loadgen did not launch but that
    runs on this machine): the listener on its port, or the process a local proxy listening
    there forwards to; None (remote host, no permission, not found)."""
    port = _port_of(endpoint)
    if port is None:
        return None
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    listening = {c.laddr.port: c.pid for c in conns
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.pid}
    pid = listening.get(port)
    if pid is None or pid == os.getpid():
        return None
    found = _follow(pid, port, listening, conns)
    if found is None:
        _FOLLOWED.pop(pid, None)  # reached directly now (an earlier run in this process may not)
        return pid
    _FOLLOWED[found.engine_pid] = found
    return found.engine_pid


def _group(pid: int, port: int) -> tuple[set[int], psutil.Process | None]:
    """The listener's processes: its parent too where that holds the same listening socket (an
    nginx master and its workers), and all their descendants; (pids, the top process)."""
    try:
        top = psutil.Process(pid)
        parent = top.parent()
        if parent is not None and any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                for c in parent.net_connections(kind="tcp")):
            top = parent
        return {top.pid, *(c.pid for c in top.children(recursive=True))}, top
    except psutil.Error:
        return {pid}, None


def _follow(pid: int, port: int, listening: dict[int, int], conns: list) -> Followed | None:
    group, top = _group(pid, port)
    if top is None:
        return None
    try:
        name = top.name()
        cmdline = top.cmdline()
    except psutil.Error:
        return None
    targets = Counter(
        listening[c.raddr.port] for c in conns
        if c.status == psutil.CONN_ESTABLISHED and c.pid in group and c.raddr
        and c.raddr.ip in LOOPBACK_HOSTS and c.raddr.port != port
        and listening.get(c.raddr.port) not in (None, os.getpid(), *group))
    if targets:
        return Followed(targets.most_common(1)[0][0], top.pid, name, "connections")
    if "nginx" in name:
        conf = nginx_conf_path(cmdline)
        upstream = nginx_upstream_port(conf, port) if conf is not None else None
        target = listening.get(upstream) if upstream is not None else None
        if target is not None and target not in group:
            return Followed(target, top.pid, name, f"config {conf}")
    return None


def nginx_conf_path(cmdline: list[str]) -> Path | None:
    """The configuration file an nginx command line names (``-c``, relative to ``-p``), or
    the default one."""
    prefix = None
    conf = None
    for flag, value in itertools.pairwise(cmdline):
        if flag == "-c":
            conf = value
        elif flag == "-p":
            prefix = value
    if conf is None:
        return NGINX_DEFAULT_CONF if NGINX_DEFAULT_CONF.is_file() else None
    path = Path(conf)
    if not path.is_absolute() and prefix:
        path = Path(prefix) / path
    return path if path.is_file() else None


_COMMENT = re.compile(r"#[^\n]*")
_TOKEN = re.compile(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};]+')


def _tokens(path: Path, depth: int = 0) -> list[str]:
    """The configuration's tokens with every ``include`` expanded in place."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    raw = [t.strip("\"'") for t in _TOKEN.findall(_COMMENT.sub("", text))]
    out: list[str] = []
    i = 0
    while i < len(raw):
        if raw[i] == "include" and i + 2 < len(raw) and raw[i + 2] == ";" and depth < 8:
            pattern = raw[i + 1]
            if not os.path.isabs(pattern):
                pattern = str(path.parent / pattern)
            for f in sorted(glob.glob(pattern)):
                out.extend(_tokens(Path(f), depth + 1))
            i += 3
            continue
        out.append(raw[i])
        i += 1
    return out


def _blocks(tokens: list[str], name: str) -> list[tuple[list[str], list[str]]]:
    """Every ``name ARGS { ... }`` block: (its arguments, the tokens inside it)."""
    found = []
    for i, t in enumerate(tokens):
        if t != name:
            continue
        j = i + 1
        while j < len(tokens) and tokens[j] not in ("{", ";", "}"):
            j += 1
        if j >= len(tokens) or tokens[j] != "{":
            continue
        depth, k = 1, j + 1
        while k < len(tokens) and depth:
            depth += {"{": 1, "}": -1}.get(tokens[k], 0)
            k += 1
        found.append((tokens[i + 1:j], tokens[j + 1:k - 1]))
    return found


def _directive_args(tokens: list[str], name: str) -> list[list[str]]:
    out = []
    for i, t in enumerate(tokens):
        if t == name and (i == 0 or tokens[i - 1] in ("{", ";", "}")):
            j = i + 1
            while j < len(tokens) and tokens[j] != ";":
                j += 1
            out.append(tokens[i + 1:j])
    return out


def _listen_port(arg: str) -> int | None:
    tail = arg.rsplit("]:", 1)[-1] if arg.startswith("[") else arg.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _loopback_port(target: str) -> int | None:
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    return int(port) if port.isdigit() and host in LOOPBACK_HOSTS else None


def nginx_upstream_port(conf: Path, port: int) -> int | None:
    """The loopback port an nginx ``server`` listening on ``port`` proxies to (its first
    ``proxy_pass``; an ``upstream`` name resolved to that block's first ``server``), or None."""
    tokens = _tokens(conf)
    upstreams = {args[0]: body for args, body in _blocks(tokens, "upstream") if args}
    for _, body in _blocks(tokens, "server"):
        if not any(args and _listen_port(args[0]) == port
                   for args in _directive_args(body, "listen")):
            continue
        for args in _directive_args(body, "proxy_pass"):
            if not args:
                continue
            netloc = urlsplit(args[0]).netloc.rsplit("@", 1)[-1]
            if netloc in upstreams:
                servers = _directive_args(upstreams[netloc], "server")
                netloc = servers[0][0] if servers and servers[0] else ""
            if (found := _loopback_port(netloc)) is not None:
                return found
    return None
