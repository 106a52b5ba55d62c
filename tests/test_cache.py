"""Cache entries filled by several processes at once (loadgen/cache.py): each publishes a whole
entry of its own with one rename, so a reader never sees a mixture or a part, and no
temporary file is left behind."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

from loadgen.cache import publish_dir, publish_file

SIZE = 4 << 20  # large enough that a write takes many system calls


def _content(i: int) -> bytes:
    return bytes([65 + i]) * SIZE


def _write_slowly(tmp: Path, data: bytes) -> None:
    with open(tmp, "wb") as fh:
        for k in range(0, len(data), 1 << 16):
            fh.write(data[k:k + (1 << 16)])
            fh.flush()


def _publisher(target: str, i: int, go, rounds: int) -> None:
    go.wait()
    for _ in range(rounds):
        publish_file(Path(target), lambda tmp: _write_slowly(tmp, _content(i)))


def _dir_publisher(target: str, i: int, go) -> None:
    go.wait()

    def fill(tmp: Path) -> None:
        for name in ("a.json", "b.json"):
            _write_slowly(tmp / name, _content(i))

    publish_dir(Path(target), fill)


def test_concurrent_file_publishers_never_show_a_part(tmp_path):
    target = tmp_path / "entry.json"
    ctx = mp.get_context("fork")
    go = ctx.Barrier(4)
    procs = [ctx.Process(target=_publisher, args=(str(target), i, go, 5)) for i in range(3)]
    for p in procs:
        p.start()
    go.wait()
    whole = {_content(i) for i in range(3)}
    while any(p.is_alive() for p in procs):
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            continue
        assert data in whole, (len(data), data[:1], data[-1:])  # one writer's, complete
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert target.read_bytes() in whole
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not tempfile's private 0600
    assert os.listdir(tmp_path) == ["entry.json"]  # no temporary file left


def test_concurrent_folder_publishers_keep_the_first_whole(tmp_path):
    target = tmp_path / "tok"
    target.mkdir()  # an empty folder (as cache_dir leaves one) is replaced
    ctx = mp.get_context("fork")
    go = ctx.Barrier(4)
    procs = [ctx.Process(target=_dir_publisher, args=(str(target), i, go)) for i in range(3)]
    for p in procs:
        p.start()
    go.wait()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    a, b = (target / "a.json").read_bytes(), (target / "b.json").read_bytes()
    assert a == b and a in {_content(i) for i in range(3)}  # both files from one publisher
    assert os.listdir(tmp_path) == ["tok"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~mask  # not tempfile's private 0700


def test_a_failed_write_leaves_nothing(tmp_path):
    seen = []

    def half_then_fail(tmp: Path) -> None:
        seen.append(tmp)
        (tmp / "x" if tmp.is_dir() else tmp).write_bytes(b"half")
        raise OSError("disk full")

    for publish in (publish_file, publish_dir):
        try:
            publish(tmp_path / "entry.npy", half_then_fail)
        except OSError as exc:
            assert "disk full" in str(exc)
        else:
            raise AssertionError("the failure was swallowed")
    # the file's temporary name keeps the entry's suffix (writers choose a format by it)
    assert seen[0].suffix == ".npy" and seen[0].parent == tmp_path and seen[1].is_dir() is False
    assert os.listdir(tmp_path) == []
