"""The laptop install: CPU-only torch wheels on request, Java asked for (not installed behind the user's back) while
CI still installs it on a clean machine, and `make mini` running as many jobs as the machine has cores."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _make_n(tmp_path: Path, *args: str) -> str:
    """The commands `make -n` would run, with a venv that does not exist yet (so the install steps show)."""
    proc = subprocess.run(
        [MAKE, "-n", *args, f"VENV={tmp_path / 'venv'}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return proc.stdout.replace("\\\n", " ")


def test_make_mini_uses_every_core_unless_told(tmp_path: Path) -> None:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    mini = [line for line in _make_n(tmp_path, "mini").splitlines() if "snakemake --profile" in line]
    assert len(mini) == 1 and mini[0].split()[-2:] == ["--cores", nproc]
    assert _make_n(tmp_path, "mini", "CORES=5").split("--cores")[1].split()[0] == "5"


def test_torch_index_selects_where_torch_comes_from(tmp_path: Path) -> None:
    url = "https://download.pytorch.org/whl/cpu"
    with_index = [line for line in _make_n(tmp_path, "test", f"TORCH_INDEX={url}").splitlines() if "cpu.txt" in line]
    assert len(with_index) == 1 and f"--index-url {url} -r requirements/cpu.txt" in with_index[0]
    plain = [line for line in _make_n(tmp_path, "test").splitlines() if "cpu.txt" in line]
    assert len(plain) == 1 and "--index-url" not in plain[0]
    # Only torch and torchvision come from that index (the rest of the install uses pip's default).
    reqs = [
        line.split("==")[0]
        for line in (REPO / "requirements" / "cpu.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert reqs == ["torch", "torchvision"]


def _bin(tmp_path: Path, tools: dict[str, str]) -> Path:
    """A PATH directory holding only the given tools: real ones (by absolute path) or shell scripts."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name, target in tools.items():
        if target.startswith("#!"):
            (d / name).write_text(target)
            (d / name).chmod((d / name).stat().st_mode | stat.S_IEXEC)
        else:
            (d / name).symlink_to(target)
    return d


@pytest.mark.parametrize("target", ["mini", "test"])
def test_without_java_make_says_how_to_install_it_and_installs_nothing(tmp_path: Path, target: str) -> None:
    log = tmp_path / "calls.log"
    spy = f'#!/bin/sh\necho "$0 $*" >> {log}\nexit 0\n'
    path = _bin(tmp_path, {"apt-get": spy, "sudo": spy, "python3": spy})
    proc = subprocess.run(
        [MAKE, target, f"VENV={tmp_path / 'venv'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(path)},
        check=False,
    )
    assert proc.returncode != 0
    assert "no Java runtime on PATH" in proc.stderr and "apt-get install default-jre-headless" in proc.stderr
    assert not log.exists()  # neither apt-get, sudo nor the install (python3 -m venv) ran
    assert not (tmp_path / "venv").exists()


def test_with_java_the_check_passes(tmp_path: Path) -> None:
    path = _bin(tmp_path, {"java": "#!/bin/sh\nexit 0\n"})
    proc = subprocess.run(
        [MAKE, "java"], cwd=REPO, capture_output=True, text=True, env={**os.environ, "PATH": str(path)}, check=False
    )
    assert proc.returncode == 0 and proc.stderr == ""


def test_ci_installs_java_on_a_clean_machine_then_runs_make_test(tmp_path: Path) -> None:
    """.ci/run in a copy of the repository whose PATH has no java: it installs one with apt-get, then runs make test."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", repo / ".ci" / "run")
    log = tmp_path / "calls.log"
    (repo / "Makefile").write_text(f"test:\n\t@command -v java >/dev/null && echo 'make test' >> {log}\n")
    bindir = tmp_path / "bin"
    apt = (
        f'#!/bin/sh\necho "apt-get $*" >> {log}\n'
        f"case \"$*\" in *install*) printf '#!/bin/sh\\nexit 0\\n' > {bindir}/java; {shutil.which('chmod')} +x {bindir}/java;; esac\n"
    )
    tools = {name: shutil.which(name) for name in ("bash", "dirname", "id", "make")}
    path = _bin(tmp_path, {"apt-get": apt, "sudo": '#!/bin/sh\nexec "$@"\n', **tools})
    proc = subprocess.run(
        [str(path / "bash"), str(repo / ".ci" / "run")],
        capture_output=True,
        text=True,
        env={"PATH": str(path), "HOME": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[-1] == "make test"
    assert any(c.startswith("apt-get install") and "default-jre-headless" in c for c in calls[:-1])
