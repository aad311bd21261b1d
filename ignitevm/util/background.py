"""Work a command does in a thread of its own while it goes on with the rest
(a clone's RAM copied, its SSH key made while QEMU starts): the result is
waited for where it is needed, and what the work raised is raised there.

What the work holds (a descriptor, a lock, a folder it writes in) is the
thread's until it has ended: ``wait()`` may be interrupted (Ctrl-C) while the
thread runs on, so a caller that then undoes what the work touches calls
``settle()`` first, which returns only once the thread has ended."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """No signal handler (no KeyboardInterrupt) runs in this thread inside the
    block: the signals wait and are handled after it (for a hand-over that
    must not be cut in two, such as a thread started and told what it owns)."""
    import signal

    old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Background:
    """``fn()``, run from now by a thread of its own."""

    def __init__(self, fn: Callable[[], object]) -> None:
        import _thread  # (not threading: a measured command's start-up)

        self._error: BaseException | None = None
        self._ended = False
        self._done = _thread.allocate_lock()
        self._done.acquire()

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # (raised again by wait(); never a traceback here)
                self._error = exc
            finally:
                self._ended = True
                self._done.release()

        with signals_held():  # (started, or not started: never an interrupt between)
            try:
                _thread.start_new_thread(run, ())
            except BaseException:
                self._ended = True
                self._done.release()
                raise

    def _join(self, interruptible: bool) -> None:
        while not self._ended:
            try:
                got = self._done.acquire()
            except BaseException:  # (an interrupt while waiting)
                if interruptible:
                    raise
                continue
            if got:
                # (ended by now: an interrupt before this release leaves the
                # lock taken, and the loop above ends all the same)
                self._done.release()

    def wait(self) -> None:
        """Return once ``fn`` has ended; raise what it raised. An interrupt
        while waiting is raised at once (the thread runs on: see settle)."""
        self._join(interruptible=True)
        if self._error is not None:
            raise self._error

    def settle(self) -> None:
        """Return once ``fn`` has ended, whatever it raised and whatever
        interrupts come meanwhile (for a caller whose own error is the one to
        say, before it undoes what ``fn`` worked on)."""
        self._join(interruptible=False)
