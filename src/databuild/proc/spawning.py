"""Starting a child off the reactor thread: libc's ``posix_spawn``, with the GIL released.

``os.posix_spawn`` holds the GIL until the child has exec'd, and cannot change directory. A
profile of a 2,000-job build found 43% of the service's GIL time inside it
(docs/performance.md). Called through ctypes, which releases the GIL, from a thread of the
reactor's pool, the wait for the exec costs the reactor nothing; glibc's (2.29+) and musl's
``posix_spawn_file_actions_addchdir_np`` change directory in the child.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
from collections.abc import Mapping, Sequence

from attrs import frozen

SHELL = "/bin/sh"
_libc = ctypes.CDLL(None, use_errno=True)
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80
# Opaque to us: generously larger than glibc's (80 and 336 bytes) and musl's.
_FILE_ACTIONS_SIZE = 1024
_ATTR_SIZE = 1024
_SIGSET_SIZE = 128
_NO_DEFAULT = (signal.SIGKILL, signal.SIGSTOP)


@frozen
class Started:
    """A child that runs: its pid, and the parent's ends of its stdin, stdout and stderr."""

    pid: int
    stdin: int
    stdout: int
    stderr: int


def start_child(executable: str, argv: Sequence[str], env: Mapping[str, str], cwd: str
                ) -> Started:
    """Start ``executable`` with ``argv`` and ``env`` in ``cwd``, as the leader of a new
    session with pipes on its stdio. Blocking: call it on a thread.

    Every signal is at its default disposition (Python ignores SIGPIPE) and unblocked in the
    child, and
    the pipes are all it inherits: every descriptor Python opens is close-on-exec (PEP 446),
    and so are the event log's (SQLite and libpq open theirs so). A script without a ``#!``
    line runs under ``/bin/sh``, as ``execvp`` would run it. Raises OSError
    (FileNotFoundError, PermissionError, ...) if the child could not exec.
    """
    pipes = [_above_stdio(fd) for _ in range(3) for fd in os.pipe()]
    stdin_r, stdin_w, out_r, out_w, err_r, err_w = pipes
    try:
        child_ends = {0: stdin_r, 1: out_w, 2: err_w}
        try:
            pid = _spawn(executable, argv, env, cwd, child_ends)
        except OSError as e:
            if e.errno != errno.ENOEXEC:
                raise
            pid = _spawn(SHELL, [SHELL, executable, *argv[1:]], env, cwd, child_ends)
    except BaseException:
        for fd in pipes:
            os.close(fd)
        raise
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)
    return Started(pid, stdin_w, out_r, err_r)


def _above_stdio(fd: int) -> int:
    """``fd``, moved above 2 if it is not: a pipe on a descriptor the child's stdio take
    (this process's own stdio being closed) would be overwritten before it is moved."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def _checked(result: int, what: str) -> None:
    if result != 0:
        raise OSError(result, f"{what}: {os.strerror(result)}")


def _strings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def _spawn(
    executable: str, argv: Sequence[str], env: Mapping[str, str], cwd: str,
    fds: Mapping[int, int],
) -> int:
    """``posix_spawn`` of ``executable`` in ``cwd``, in a new session, each ``fds`` item
    ``child: parent`` giving the child descriptor ``child`` as a copy of ``parent``."""
    actions = ctypes.create_string_buffer(_FILE_ACTIONS_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    defaults = ctypes.create_string_buffer(_SIGSET_SIZE)
    unblocked = ctypes.create_string_buffer(_SIGSET_SIZE)
    _checked(_libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init")
    try:
        for child, parent in fds.items():
            _checked(_libc.posix_spawn_file_actions_adddup2(actions, parent, child), "adddup2")
        _checked(
            _libc.posix_spawn_file_actions_addchdir_np(actions, os.fsencode(cwd)), "addchdir"
        )
        _checked(_libc.posix_spawnattr_init(attr), "posix_spawnattr_init")
        try:
            _libc.sigfillset(defaults)
            for sig in _NO_DEFAULT:
                _libc.sigdelset(defaults, sig)
            _checked(_libc.posix_spawnattr_setsigdefault(attr, defaults), "setsigdefault")
            # The calling thread's mask is not the child's business.
            _libc.sigemptyset(unblocked)
            _checked(_libc.posix_spawnattr_setsigmask(attr, unblocked), "setsigmask")
            flags = ctypes.c_short(
                _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK
            )
            _checked(_libc.posix_spawnattr_setflags(attr, flags), "setflags")
            pid = ctypes.c_int()
            result = _libc.posix_spawn(
                ctypes.byref(pid),
                os.fsencode(executable),
                actions,
                attr,
                _strings([os.fsencode(a) for a in argv]),
                _strings([os.fsencode(f"{k}={v}") for k, v in env.items()]),
            )
        finally:
            _libc.posix_spawnattr_destroy(attr)
    finally:
        _libc.posix_spawn_file_actions_destroy(actions)
    if result != 0:
        raise OSError(result, os.strerror(result), executable)
    return pid.value
