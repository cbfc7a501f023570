"""Warm starts for local CPU runs: torch is imported once, and every run is a fork of a process that holds it.

A run of the mini study trains for about 5 s and spends about 3 s importing torch and ``torch._dynamo`` (which
torch's optimizers import on first use): with 126 runs on two cores, that is 3 minutes of a 10-minute study.
``python -m vlpeft.warm MODULE ARGS...`` runs ``python -m MODULE ARGS...`` in a fork of a *warm server*, a process
of the same interpreter that imported the module once; the server starts on first use and exits when idle.

    python -m vlpeft.warm vlpeft.train --config results/mini/runs/.../run_config.yaml

What the run sees is what a fresh ``python -m MODULE`` would see: its own process (and process group), the client's
standard input, output and error (passed over the socket), working directory, environment, arguments and exit
status (a signal that ends the run ends the client with the same signal). SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP
and SIGQUIT sent to the client are passed to the run, so a Snakemake job that is stopped stops its run the usual
way (the run checkpoints); a client that is killed outright (SIGKILL) takes its run with it. Python's ``random``
and numpy's global generator are reseeded from the OS as in a fresh process (the runs seed their own).

One server per interpreter, ``sys.path``, module, import-time environment (``OMP_*``, ``MKL_*``, ``CUDA_*``,
``TORCH*``, ...) and state of the code: the server's name is a digest of these, including the size and mtime of
every file of this package and of the module's file, and the listing of every ``sys.path`` folder but the working
directory, so an edited source file or an installed
package starts a new server instead of running stale code. Servers live in a private folder (mode 0700, checked;
``$VLPEFT_WARM_DIR``, else ``$XDG_RUNTIME_DIR/vlpeft-warm``, else ``<tmp>/vlpeft-warm-<uid>``) and serve only
their own user (the peer's credentials are checked), and exit after ``$VLPEFT_WARM_IDLE_S`` seconds (default 60)
without runs.

Linux only (fork without exec is unsafe on macOS), and never inside a SLURM job (the server would outlive the job's
accounting and limits); elsewhere, with ``VLPEFT_WARM=0``, or when a server cannot be started, the client runs the
module cold (it ``exec``s ``python -m MODULE``) and says why when it is not by choice.
Warm, a rule's ``benchmark:`` file measures the client (its wall time is the run's, its memory and CPU time are not):
the run's own record keeps the run's time and peak memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGQUIT)
# Environment read when modules are imported (thread pools, devices, allocators, import paths): part of the key.
IMPORT_ENV_PREFIXES = (
    "OMP_",
    "MKL_",
    "KMP_",
    "GOMP_",
    "OPENBLAS_",
    "ONEDNN_",
    "DNNL_",
    "ATEN_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "NCCL_",
    "CUBLAS",
    "LD_",
    "PYTHON",
    "HF_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "VLPEFT_",
)
# What a server imports before serving, per module run (more than the module itself where it imports lazily).
PRELOAD = {"vlpeft.train": ("torch", "torch._dynamo", "vlpeft.train", "vlpeft.evaluate", "vlpeft.metrics.caption")}
START_TIMEOUT_S = 120.0
_HEADER = struct.Struct("!I")


class WarmUnavailable(RuntimeError):
    """No warm server can serve this client (the client then runs the module cold)."""


# -- where servers live, and their names ---------------------------------------------------------------------------
def server_dir() -> Path:
    """The private folder of this user's servers, created with mode 0700; raises WarmUnavailable if it is not
    private (another user could then connect, or plant a socket)."""
    base = os.environ.get("VLPEFT_WARM_DIR")
    if base:
        d = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(os.environ["XDG_RUNTIME_DIR"]) / "vlpeft-warm"
    else:
        import tempfile

        d = Path(tempfile.gettempdir()) / f"vlpeft-warm-{os.getuid()}"
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(d)
    except OSError as e:
        raise WarmUnavailable(f"cannot create {d}: {e}") from e
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise WarmUnavailable(
            f"{d} is not a private folder of this user (mode {oct(st.st_mode & 0o777)}, owner "
            f"uid {st.st_uid}): remove it, or set VLPEFT_WARM_DIR to a folder only you can use"
        )
    return d


def _package_state() -> list:
    """(path, size, mtime) of every file of this package: an edit changes the server."""
    root = Path(__file__).resolve().parent
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            st = os.stat(os.path.join(dirpath, name))
            out.append([os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns])
    return out


def _path_state(module: str) -> list:
    """``sys.path`` with the listing of each of its folders (an installed or upgraded package changes the server),
    but the working directory's (where runs write), and the module's own file."""
    out = []
    cwd = os.getcwd()
    for entry in sys.path:
        p = os.path.abspath(entry or cwd)
        listing = []
        if p != cwd and os.path.isdir(p):
            try:
                listing = sorted(os.listdir(p))
            except OSError:
                pass
        out.append([p, hashlib.sha256("\n".join(listing).encode()).hexdigest()])
    try:
        import importlib.util

        origin = importlib.util.find_spec(module).origin
        st = os.stat(origin)
        out.append([origin, st.st_size, st.st_mtime_ns])
    except (ImportError, AttributeError, TypeError, ValueError, OSError):
        out.append([module, None])  # not found: the server says so when it imports it
    return out


def server_key(module: str, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    state = {
        "python": [os.path.realpath(sys.executable), sys.version],
        "module": module,
        "preload": PRELOAD.get(module, (module,)),
        "env": sorted((k, v) for k, v in env.items() if k.startswith(IMPORT_ENV_PREFIXES)),
        "path": _path_state(module),
        "package": _package_state(),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:24]


def supported() -> str | None:
    """None when warm starts can run here, else why not."""
    if os.environ.get("VLPEFT_WARM", "1") == "0":
        return ""  # turned off: no message
    if os.environ.get("SLURM_JOB_ID"):
        return ""  # a cluster job: a server would outlive the job's accounting and limits (and serve one run)
    if not sys.platform.startswith("linux"):
        return f"warm starts need Linux (fork without exec is unsafe on {sys.platform})"
    return None


# -- the client ----------------------------------------------------------------------------------------------------
def _run_cold(module: str, args: list[str], why: str | None) -> None:
    if why:
        print(f"vlpeft.warm: {why}; running python -m {module} in a new process", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def _at_socket(path: Path, act) -> None:
    """``act(address)`` with an address of ``path`` that fits a Unix socket address (about 100 bytes): the path
    itself, or its name with the working directory moved to its folder meanwhile (deep temporary folders, such as
    pytest's, are longer)."""
    if len(os.fsencode(path)) < 100:
        act(str(path))
        return
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(path.parent)
        act(path.name)
    finally:
        os.fchdir(here)
        os.close(here)


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _at_socket(path, s.connect)
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        return None
    return s


def _start_server(d: Path, key: str, module: str) -> socket.socket:
    """Connect to the server named ``key``, starting it first if none answers (one starter at a time)."""
    import subprocess

    sock_path = d / f"{key}.sock"
    with open(d / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        s = _connect(sock_path)
        if s is not None:
            return s
        sock_path.unlink(missing_ok=True)  # a server that is gone (killed) left its socket
        log_path = d / f"{key}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vlpeft.warm", "--serve", str(sock_path), "--module", module],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not in the job's process group: a stopped job does not stop the server
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            s = _connect(sock_path)
            if s is not None:
                return s
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise WarmUnavailable(
                    f"the warm server exited ({proc.returncode}) while starting: " + " | ".join(tail)
                )
            time.sleep(0.02)
        proc.kill()
        raise WarmUnavailable(f"the warm server did not answer within {START_TIMEOUT_S:.0f} s (log: {log_path})")


def _read_line(s: socket.socket, buf: bytearray) -> str | None:
    while b"\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


def client(module: str, args: list[str]) -> int:
    """Run ``python -m module args`` in a fork of the warm server; returns its exit status (or ends with its
    signal). Runs the module cold (exec) when no server can serve."""
    why = supported()
    if why is not None:
        _run_cold(module, args, why or None)
    try:
        d = server_dir()
        key = server_key(module)
        s = _connect(d / f"{key}.sock") or _start_server(d, key, module)
    except (WarmUnavailable, OSError) as e:
        _run_cold(module, args, str(e))
    child: list[int] = []
    pending: list[int] = []

    def forward(signum, _frame):
        if child:
            try:
                os.kill(child[0], signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    request = json.dumps({"module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    buf = bytearray()
    try:
        socket.send_fds(s, [_HEADER.pack(len(request)) + request], [0, 1, 2])
        line = _read_line(s, buf)
    except OSError as e:
        line = None
        err = e
    else:
        err = None
    if line is None or not line.startswith("pid "):
        # The request was not taken (a server that is stopping): nothing ran, so run it cold.
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        _run_cold(module, args, f"the warm server did not take the run ({err or line or 'connection closed'})")
    child.append(int(line.split()[1]))
    for signum in pending:
        os.kill(child[0], signum)
    line = _read_line(s, buf)
    if line is None or not line.startswith("exit "):
        print(f"vlpeft.warm: lost the warm server while process {child[0]} ran {module}", file=sys.stderr)
        return 1
    status = int(line.split()[1])
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # ended by a signal: end the same way
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


# -- the server ----------------------------------------------------------------------------------------------------
def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10.0)
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    try:
        if len(data) < _HEADER.size:
            raise ValueError("short request")
        (size,) = _HEADER.unpack(data[: _HEADER.size])
        body = bytearray(data[_HEADER.size :])
        while len(body) < size:
            chunk = conn.recv(min(1 << 16, size - len(body)))
            if not chunk:
                raise ValueError("truncated request")
            body += chunk
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} file descriptors instead of 3")
        return json.loads(bytes(body)), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        conn.settimeout(None)


def _child(request: dict, fds: list[int]) -> None:
    """In the fork: become ``python -m module args`` as the client would have started it, run it, exit."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: the server stops the run and whatever it started together
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for sig in FORWARDED + (signal.SIGCHLD,):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # Buffering as a fresh interpreter chooses it for these streams (line-buffered on a terminal).
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import random

        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        import runpy

        sys.argv = [request["module"], *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(sock_path: Path, module: str, idle_s: float) -> int:
    import importlib
    import threading

    for name in PRELOAD.get(module, (module,)):
        importlib.import_module(name)
    if threading.active_count() != 1:  # a fork copies only this thread: locks other threads hold would stay held
        print(f"vlpeft.warm: importing {module} started threads; cannot fork safely", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _f: stopping.append(signum))
    old_umask = os.umask(0o077)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _at_socket(sock_path, listener.bind)
    os.umask(old_umask)
    listener.listen(64)
    inode = os.stat(sock_path).st_ino
    print(f"vlpeft.warm: serving {module} on {sock_path} (pid {os.getpid()})", flush=True)
    children: dict[int, socket.socket | None] = {}
    conns: dict[socket.socket, int] = {}
    last_busy = time.monotonic()

    def close_listener():
        try:
            if os.stat(sock_path).st_ino == inode:
                sock_path.unlink()
        except FileNotFoundError:
            pass
        listener.close()

    while True:
        if stopping and listener.fileno() >= 0:
            close_listener()
            for pid in children:
                os.killpg(pid, signal.SIGTERM)
        watch = list(conns) + ([listener] if listener.fileno() >= 0 else [])
        ready, _, _ = select.select(watch, [], [], 0.05)
        for r in ready:
            if r is listener:
                conn, _ = listener.accept()
                try:
                    if _peer_uid(conn) != os.getuid():
                        raise PermissionError("a client of another user")
                    request, fds = _receive(conn)
                except (OSError, ValueError) as e:
                    print(f"vlpeft.warm: refused a request: {e}", flush=True)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    for c in list(conns) + [conn]:
                        c.close()
                    _child(request, fds)
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                conns[conn] = pid
                try:
                    conn.sendall(f"pid {pid}\n".encode())
                except OSError:
                    pass
            else:  # a client's end: readable means it closed (killed): its run goes too
                pid = conns.pop(r)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                children[pid] = None
                r.close()
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                conns.pop(conn, None)
                try:
                    conn.sendall(f"exit {status}\n".encode())
                except OSError:
                    pass
                conn.close()
        if children:
            last_busy = time.monotonic()
        elif stopping or time.monotonic() - last_busy > idle_s:
            if listener.fileno() >= 0:
                close_listener()
            return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        import argparse

        p = argparse.ArgumentParser(prog="python -m vlpeft.warm --serve")
        p.add_argument("--serve", type=Path, required=True)
        p.add_argument("--module", required=True)
        a = p.parse_args(argv)
        return serve(a.serve, a.module, float(os.environ.get("VLPEFT_WARM_IDLE_S", "60")))
    if not argv or argv[0].startswith("-"):
        print("usage: python -m vlpeft.warm MODULE [ARGS...]  (runs python -m MODULE ARGS... warm)", file=sys.stderr)
        return 2
    return client(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
