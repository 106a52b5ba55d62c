"""Where loadgen keeps things it builds or unpacks once and reuses (engine binaries, models, venvs,
tokenizers, tokenized documents, embeddings), and how an entry (or any file written whole:
results/files.py) is published.

Outside any clone, so CI and later sessions on the same machine reuse them: ``$LOADGEN_CACHE`` or
``$XDG_CACHE_HOME/loadgen`` or ``~/.cache/loadgen``.

Several processes may fill the same entry at once (the workers of a scaled run, parallel test
workers, two users' runs): each writes a temporary file or folder of its own beside the entry
and publishes it with one rename, so a reader finds no entry or a whole one, never a mixture.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("LOADGEN_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "loadgen"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prefix(target: Path) -> str:
    return f".{target.name}.partial-{os.getpid()}-"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: tempfile makes files 0600 and folders 0700; an entry gets the modes a plain write would
_UMASK = _umask()


def publish_file(target: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a temporary file of this call's own beside ``target`` (its name ends
    in ``target``'s suffix, for writers that choose a format by it); then it replaces
    ``target`` in one rename. Processes publishing the same entry at once each write their own;
    the last rename wins."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=_prefix(target), suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def publish_text(target: Path, text: str) -> Path:
    """``text`` (UTF-8) published as ``target`` (``publish_file``)."""
    return publish_file(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def publish_dir(target: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a temporary folder of this call's own beside ``target``, then it
    becomes ``target`` in one rename; when another process published ``target`` first, that
    one stays and this one is discarded."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target)))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_UMASK)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
