"""Work a command does in a thread of its own while it goes on with the rest
(a clone's RAM copied, its SSH key made while QEMU starts): the result is
waited for where it is needed, and what the work raised is raised there."""

from __future__ import annotations

from collections.abc import Callable


class Background:
    """``fn()``, run from now by a thread of its own."""

    def __init__(self, fn: Callable[[], object]) -> None:
        import _thread  # (not threading: a measured command's start-up)

        self._error: BaseException | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # (raised again by wait(); never a traceback here)
                self._error = exc
            finally:
                self._done.release()

        try:
            _thread.start_new_thread(run, ())
        except BaseException:
            self._done.release()
            raise

    def wait(self) -> None:
        """Return once ``fn`` has ended; raise what it raised."""
        with self._done:
            pass
        if self._error is not None:
            raise self._error
