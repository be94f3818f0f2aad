"""SIGINT and SIGTERM as ``KeyboardInterrupt``, held back while a critical section runs.

A long run must stop promptly on Ctrl-C (SIGINT) or a scheduler's SIGTERM, but never halfway
through changing its state (an optimizer step, a checkpoint write), or the state it saves would
not be one the uninterrupted run ever passed through. Inside :meth:`Interrupts.critical` a signal
is only recorded; it is raised as ``KeyboardInterrupt`` when the section ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The ``KeyboardInterrupt`` a handled signal raises; ``signum`` says which (exit 128 + it)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """128 + the signal behind a ``KeyboardInterrupt`` (SIGINT's 130 when it is not known)."""
    return 128 + int(getattr(exc, "signum", None) or signal.SIGINT)


class Interrupts:
    """Context manager installing the handlers (main thread only; elsewhere a no-op).

    Attributes:
        signum: the signal that stopped the run (``None`` if none did; a ``KeyboardInterrupt``
            raised some other way counts as SIGINT).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth = 0
        self._pending = False
        self._previous: dict[int, Any] = {}
        self._entered = 0

    def __enter__(self) -> Interrupts:
        self._entered += 1  # re-entrant: the outermost ``with`` installs and restores
        if self._entered == 1 and threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._entered -= 1
        if self._entered == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum
        if self._depth:
            self._pending = True
        else:
            raise Interrupted(self.signum)

    @contextmanager
    def critical(self, *, discard: bool = False) -> Iterator[None]:
        """Run the body with signals held back; re-raise one that arrived (unless ``discard``)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending:
            self._pending = False
            if not discard:
                raise Interrupted(self.signum or signal.SIGINT)
