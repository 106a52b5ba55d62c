"""A throwaway Ray cluster of several nodes on this host, bound to 127.0.0.1 only (tests and
scripts/bench_scale.py): ``ray start --head`` and ``ray start --address`` for each further node,
stopped with ``ray stop --force``.

Ray binds its servers to 127.0.0.1 only when a node's IP is exactly 127.0.0.1, and it keeps that
IP only when its "no cluster" switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) is on; but that same
switch refuses to start a second node. The further nodes are therefore started by Ray's own CLI
with the switch off and Ray's loopback-to-routable-IP rewrite disabled for this one process
(``_NODE_LAUNCHER``), so they too bind 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

_NODE_LAUNCHER = (
    "import sys\n"
    "import ray._private.services as services\n"
    "services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1\n"
    "from ray.scripts.scripts import main\n"
    "sys.exit(main())\n")
_COMMON = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]


class RayClusterError(RuntimeError):
    pass


class LocalRayCluster:
    def __init__(self, nodes: int = 2, cpus_per_node: int = 2, temp_dir: Path | None = None,
                 object_store_bytes: int = 200_000_000, timeout_s: float = 180) -> None:
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.temp_dir = temp_dir
        self.store = object_store_bytes
        self.timeout = timeout_s
        self.address: str | None = None

    def _run(self, argv: list[str], env: dict[str, str]) -> str:
        res = subprocess.run(argv, env=env, capture_output=True, text=True,
                             timeout=self.timeout, check=False)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise RayClusterError(f"{' '.join(argv[:3])} failed: {' | '.join(tail)}")
        return res.stdout + res.stderr

    def start(self) -> str:
        ray_cli = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
        # token authentication off for this loopback cluster unless the caller chose a mode:
        # with a token file left in ~/.ray and no mode set, Ray's nodes disagreed on the mode
        # and a further node was refused ("InvalidAuthToken")
        base = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
        env = dict(base, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        head = [*ray_cli, "start", "--head", "--port", "0", "--include-dashboard=false",
                "--num-cpus", str(self.cpus), "--object-store-memory", str(self.store),
                *_COMMON]
        if self.temp_dir is None:
            self.temp_dir = Path(tempfile.mkdtemp(prefix="loadgen-ray-"))
        head += ["--temp-dir", str(self.temp_dir)]
        self._run(head, env)
        # `ray start --head` records the cluster's address in its temp dir
        current = self.temp_dir / "ray_current_cluster"
        text = current.read_text().strip() if current.exists() else ""
        if not re.fullmatch(r"127\.0\.0\.1:\d+", text):
            raise RayClusterError(f"ray start --head: no 127.0.0.1 address in {current}")
        self.address = text
        env1 = dict(base, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
        for _ in range(self.nodes - 1):
            self._run([sys.executable, "-c", _NODE_LAUNCHER, "start", "--address",
                       self.address, "--num-cpus", str(self.cpus), "--object-store-memory",
                       str(self.store), *_COMMON], env1)
        return self.address

    def stop(self) -> None:
        subprocess.run([sys.executable, "-c", "from ray.scripts.scripts import main; main()",
                        "stop", "--force"], capture_output=True, timeout=self.timeout,
                       check=False)

    def __enter__(self) -> LocalRayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
