"""Work the report hands to a second process, to use a second core on large data.

:func:`run_forked` starts ``fn()`` in a forked child process and returns a :class:`Pending`
whose :meth:`~Pending.result` is what ``fn`` returned (sent back through a pipe) or
raises what it raised. A fork shares the parent's memory copy-on-write, so the child reads
the data without copying or pickling it; only the (small) result travels back.

Results are the same as computing in the parent: ``fn`` runs the same code on the same
memory, and every random step of the report takes its own seed. When fork is not
available (Windows, or a platform whose ``multiprocessing`` cannot fork), or the child
dies without an answer (killed, out of memory), ``fn`` runs in the parent instead, so the
report never depends on the second process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Pending", "SharedCounter", "can_fork", "map_shared", "run_forked"]

log = logging.getLogger(__name__)


def can_fork() -> bool:
    """True when a child process can be forked (POSIX with the fork start method)."""
    return hasattr(os, "fork") and "fork" in multiprocessing.get_all_start_methods()


class Pending:
    """The result of ``fn()``, computed in a forked child, or in the parent on demand."""

    def __init__(self, fn: Callable[[], Any], *, fork: bool) -> None:
        self._fn = fn
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._proc: Any = None
        self._conn: Any = None
        if fork and can_fork():
            try:
                self._start()
            except OSError as exc:  # no memory or process slot for a child: compute here
                log.info("report: could not fork (%s); computing in this process", exc)
                self._proc = self._conn = None

    @property
    def forked(self) -> bool:
        """True while (or after) the work runs in a child process."""
        return self._proc is not None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("fork")
        sys.stdout.flush()  # else the child would write the parent's buffered output again
        sys.stderr.flush()
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(self._fn, send), daemon=True)
        proc.start()
        send.close()
        self._proc, self._conn = proc, recv

    def cancel(self) -> None:
        """Stop the child (when one runs) and forget the work."""
        if self._proc is not None and not self._done:
            self._proc.terminate()
            self._proc.join()
            self._conn.close()
        self._done = True
        self._value = None
        self._error = RuntimeError("cancelled")
        self._fn = None  # type: ignore[assignment]

    def result(self) -> Any:
        """What ``fn()`` returned; raises what it raised."""
        if not self._done:
            self._collect()
        if self._error is not None:
            raise self._error
        return self._value

    def _collect(self) -> None:
        answer = None
        if self._proc is not None:
            try:
                answer = self._conn.recv()
            except Exception:  # no answer (the child died), or one that does not rebuild
                answer = None
            finally:
                self._conn.close()
                self._proc.join()
            if answer is None:
                log.info(
                    "report: the worker process gave no usable result (exit code %s); "
                    "computing in this process",
                    self._proc.exitcode,
                )
        if answer is None:
            try:
                answer = (True, self._fn())
            except BaseException as exc:  # re-raised by result(), as a direct call would
                answer = (False, exc)
        ok, payload = answer
        if ok:
            self._value = payload
        else:
            self._error = payload
        self._done = True
        self._fn = None  # type: ignore[assignment]


def _child(fn: Callable[[], Any], conn: Any) -> None:
    """Run ``fn`` and send ``(True, result)`` or ``(False, exception)`` to the parent (the
    pipe is private to the two processes and carries only this answer, never input data)."""
    try:
        try:
            answer: tuple[bool, Any] = (True, fn())
        except Exception as exc:
            answer = (False, exc)
        try:
            conn.send(answer)
        except Exception:  # an answer that cannot be sent: the parent computes it itself
            conn.send(None)
    finally:
        conn.close()


def run_forked(fn: Callable[[], Any], *, fork: bool = True) -> Pending:
    """Start ``fn()`` in a forked child (when ``fork`` and the platform allows it)."""
    return Pending(fn, fork=fork)


class SharedCounter:
    """Items ``0..n-1`` handed out once each to whichever process asks next: made before a
    fork, it is shared by the parent and the child (in one process it counts there)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._value = multiprocessing.get_context("fork" if can_fork() else None).Value("i", 0)

    def take(self) -> int | None:
        """The next item not yet taken, or ``None`` when every item is taken."""
        with self._value.get_lock():
            i = self._value.value
            if i >= self.n:
                return None
            self._value.value = i + 1
        return i

    def drain(self, fn: Callable[[int], Any]) -> dict[int, Any]:
        """``{i: fn(i)}`` for every item this process takes, until none is left."""
        done = {}
        while (i := self.take()) is not None:
            done[i] = fn(i)
        return done


def map_shared(fn: Callable[[int], Any], n: int, *, fork: bool = True) -> list[Any]:
    """``[fn(0), ..., fn(n - 1)]``, the items shared between this process and a forked
    child: each takes the next item not yet taken, so the slower items do not stall the
    other process. The same values as calling ``fn`` in order here (``fn`` must not depend
    on which items ran before it in the same process)."""
    if n < 2 or not (fork and can_fork()):
        return [fn(i) for i in range(n)]
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("i", 0)

    def take() -> int:
        with counter.get_lock():
            i = counter.value
            counter.value = i + 1
        return i

    def work() -> dict[int, Any]:
        done = {}
        while (i := take()) < n:
            done[i] = fn(i)
        return done

    other = run_forked(work)
    mine = work()
    if not other.forked:  # the child never started: work() above did every item
        return [mine[i] for i in range(n)]
    try:
        theirs = other.result()
    except Exception:
        theirs = {}
    out = {**theirs, **mine}
    return [out[i] if i in out else fn(i) for i in range(n)]
