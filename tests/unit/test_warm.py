"""Warm starts (vlpeft.warm): a run forked from a server that imported its module once behaves like a fresh one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlpeft import warm

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts are Linux only")

STUB = """
import os, signal, sys, time

def main():
    print("out", sys.argv[1:], os.getcwd(), os.environ.get("STUB_VALUE"), os.getpid(), os.getppid(), flush=True)
    print("err", file=sys.stderr, flush=True)
    what = sys.argv[1]
    if what == "sleep":
        def stop(signum, frame):
            print("got", signum, flush=True)
            sys.exit(75)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        time.sleep(60)
    if what == "suicide":
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "raise":
        raise RuntimeError("boom")
    sys.exit(int(what))

if __name__ == "__main__":
    main()
"""


@pytest.fixture
def stub(tmp_path, monkeypatch) -> Path:
    """A folder holding the module ``stub_mod`` (imported from the working directory, as ``python -m`` does), and
    a private server folder whose servers exit after 3 idle seconds."""
    (tmp_path / "stub_mod.py").write_text(STUB)
    monkeypatch.setenv("VLPEFT_WARM_DIR", str(tmp_path / "servers"))
    monkeypatch.setenv("VLPEFT_WARM_IDLE_S", "3")
    monkeypatch.delenv("VLPEFT_WARM", raising=False)
    return tmp_path


def _client(cwd: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vlpeft.warm", "stub_mod", *args],
        cwd=cwd,
        stdout=open(cwd / f"out-{args[0]}.txt", "w"),
        stderr=open(cwd / f"err-{args[0]}.txt", "w"),
        **kw,
    )


def _out(cwd: Path, name: str) -> list[str]:
    return (cwd / f"out-{name}.txt").read_text().split()


def _wait_for(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def test_a_run_gets_the_clients_streams_folder_environment_arguments_and_exit_status(stub, monkeypatch):
    # A server folder deeper than a Unix socket address can name (about 100 bytes), as pytest's are under xdist.
    monkeypatch.setenv("VLPEFT_WARM_DIR", str(stub / ("deep" * 30) / "servers"))
    env = {**os.environ, "STUB_VALUE": "first"}
    first = _client(stub, "3", env=env)
    assert first.wait(timeout=60) == 3
    out = _out(stub, "3")
    assert out[:4] == ["out", "['3']", str(stub), "first"]
    assert (stub / "err-3.txt").read_text() == "err\n"
    server = int(out[5])  # the run's parent
    assert int(out[4]) != first.pid and server != first.pid  # a fork of the server, not the client's own process
    second = _client(stub, "4", env={**os.environ, "STUB_VALUE": "second"})
    assert second.wait(timeout=60) == 4
    out = _out(stub, "4")
    assert out[3] == "second" and int(out[5]) == server  # the same server, the new environment
    servers = stub / ("deep" * 30) / "servers"
    assert list(servers.glob("*.sock"))
    stat = os.stat(servers)
    assert stat.st_mode & 0o777 == 0o700


def test_an_exception_exits_1_with_its_traceback(stub):
    assert _client(stub, "raise").wait(timeout=60) == 1
    assert "RuntimeError: boom" in (stub / "err-raise.txt").read_text()


def test_signals_to_the_client_reach_the_run(stub):
    proc = _client(stub, "sleep")
    _wait_for(stub / "out-sleep.txt", "ready")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 75
    assert "got 15" in (stub / "out-sleep.txt").read_text()


def test_a_run_ended_by_a_signal_ends_the_client_by_the_same_signal(stub):
    assert _client(stub, "suicide").wait(timeout=60) == -signal.SIGKILL


def test_a_killed_client_takes_its_run_along(stub):
    proc = _client(stub, "sleep")
    _wait_for(stub / "out-sleep.txt", "ready")
    run_pid = int(_out(stub, "sleep")[4])
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(run_pid):
        assert time.monotonic() < deadline, f"run {run_pid} outlived its killed client"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_idle_server_exits_and_removes_its_socket(stub, monkeypatch):
    monkeypatch.setenv("VLPEFT_WARM_IDLE_S", "0.5")
    assert _client(stub, "0").wait(timeout=60) == 0
    deadline = time.monotonic() + 20
    while list((stub / "servers").glob("*.sock")):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_folder_others_can_use_is_refused_and_the_run_goes_cold(stub):
    shared = stub / "servers"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(warm.WarmUnavailable, match="not a private folder"):
        warm.server_dir()
    assert _client(stub, "5").wait(timeout=60) == 5
    assert "not a private folder" in (stub / "err-5.txt").read_text()
    out = _out(stub, "5")
    assert out[1] == "['5']" and not list(shared.iterdir())  # ran cold: no server


@pytest.mark.parametrize("setting", [{"VLPEFT_WARM": "0"}, {"SLURM_JOB_ID": "12"}], ids=["off", "slurm_job"])
def test_turned_off_or_in_a_slurm_job_it_runs_cold_without_a_word(stub, setting):
    assert _client(stub, "6", env={**os.environ, **setting}).wait(timeout=60) == 6
    assert (stub / "err-6.txt").read_text() == "err\n"
    assert not (stub / "servers").exists()


def test_the_server_name_follows_the_code_the_path_and_the_import_time_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    key = warm.server_key("vlpeft.train")
    assert warm.server_key("vlpeft.train") == key
    assert warm.server_key("vlpeft.train", {**os.environ, "UNRELATED": "x"}) == key
    assert warm.server_key("vlpeft.train", {**os.environ, "OMP_NUM_THREADS": "2"}) != key
    assert warm.server_key("other.module") != key
    monkeypatch.syspath_prepend(str(tmp_path))
    with_path = warm.server_key("vlpeft.train")
    assert with_path != key
    (tmp_path / "new_package.py").write_text("")  # a package installed on the path
    assert warm.server_key("vlpeft.train") != with_path
    with_path = warm.server_key("vlpeft.train")
    monkeypatch.chdir(tmp_path)  # the working directory's files are not code: a new output keeps the server
    here = warm.server_key("vlpeft.train")
    (tmp_path / "output.txt").write_text("")
    assert warm.server_key("vlpeft.train") == here
    state = warm._package_state()
    assert any(p == "warm.py" for p, _, _ in state)
    monkeypatch.setattr(warm, "_package_state", lambda: [*state, ["edited.py", 1, 1]])
    assert warm.server_key("vlpeft.train") != here
