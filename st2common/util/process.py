"""Process helpers: is a pid alive, stop a pid with a grace period."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import time
from pathlib import Path


def read_pid(path: Path) -> int | None:
    """The pid stored in a pid file, or None."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie we own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, grace: float = 5.0) -> bool:
    """SIGTERM pid, SIGKILL it after grace seconds; True if it had to be killed."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return False
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    for _ in range(100):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            break
        time.sleep(0.02)
    return True


def _proc_stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgrp, state) of pid from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[2]), fields[0]


def tree_pids(root: int) -> set[int]:
    """root, its live descendants and every live member of its process group (when it leads one)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[2] != "Z":
                stats[int(entry)] = stat
    found = {pid for pid, (_, pgrp, _) in stats.items() if pgrp == root}
    if root in stats:
        found.add(root)
    # Descendants that left the group (setsid, setpgid) still belong to the tree.
    frontier = set(found)
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in stats.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(root: int, grace: float = 1.0) -> bool:
    """SIGTERM root's whole process tree, SIGKILL what is left after grace seconds; True if any was killed.

    root is a process started with start_new_session=True (so its pid is also its
    process group id). Zombies count as gone: reaping them is the parent's job, so
    this never calls waitpid and never steals an exit status from a Popen object.
    """
    pids = tree_pids(root)
    if not pids:
        return False
    if grace > 0:
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        delay = 0.002
        while time.monotonic() < deadline:
            # Re-scan: a dying shell may still fork, and new children join the tree.
            pids = tree_pids(root) | {pid for pid in pids if pid_alive(pid)}
            if not pids:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    killed = False
    for _ in range(3):
        pids = tree_pids(root) | {pid for pid in pids if pid_alive(pid)}
        if not pids:
            break
        _signal_all(pids, signal.SIGKILL)
        killed = True
        time.sleep(0.01)
    return killed


def die_with_parent(signum: int = signal.SIGKILL):
    """A preexec_fn: the kernel sends signum to the child when the process that started it dies.

    Linux's PR_SET_PDEATHSIG; it survives exec (but not a set-user-ID one, such
    as sudo). Elsewhere the child is left to the caller's own clean-up.
    """
    return functools.partial(_set_death_signal, signum)


def _set_death_signal(signum: int) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signum)  # 1 == PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def processes_with_env(variable: str, value: str) -> dict[int, str]:
    """{pid: command line} of every live process whose environment has variable=value (Linux /proc)."""
    needle = f"{variable}={value}".encode()
    found = {}
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                found[int(entry.name)] = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return found
