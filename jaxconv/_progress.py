"""The one progress bar of jaxconv: drawn on a terminal, silent everywhere else.

``jaxconv bench``, ``algorithm="autotune"`` and the examples show long work
with :func:`progress`.  The bar is redrawn in place with carriage returns,
which only makes sense on a terminal: when the stream (standard error by
default) is not a terminal -- a log file, a pipe, CI, a notebook cell -- the
bar draws nothing at all, so logs stay free of ``\\r`` noise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TextIO, TypeVar

__all__ = ["Progress", "progress"]

T = TypeVar("T")


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an open terminal (``isatty()``), never raising."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


class Progress(Generic[T]):
    """A one-line progress bar, drawn only when its stream is a terminal.

    Iterate over it (``for item in Progress(items, "cases")``), or count by
    hand with :meth:`update` inside a ``with`` block.  The line reads
    ``desc [#####.....] 3/10 1.2s info``; it is finished with a newline when
    the work is done.

    Args:
      iterable: the items to iterate over, or ``None`` to count by hand.
      desc: a short name for the work, printed before the bar.
      total: the number of steps; defaults to ``len(iterable)`` when known.
      label: called with each item as iteration reaches it; its result is
        shown after the bar (e.g. the name of the case being timed).
      stream: where to draw; defaults to ``sys.stderr`` at construction time.
      enabled: force the bar on or off; ``None`` (the default) means "on
        exactly when ``stream.isatty()``".

    Example:
      >>> import io
      >>> log = io.StringIO()  # not a terminal: nothing is drawn
      >>> [x * x for x in Progress(range(4), "squares", stream=log)]
      [0, 1, 4, 9]
      >>> log.getvalue()
      ''
    """

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        desc: str = "",
        *,
        total: int | None = None,
        label: Callable[[T], str] | None = None,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.desc, self.total, self.label, self.width = desc, total, label, width
        self.stream: TextIO = sys.stderr if stream is None else stream
        self.enabled = is_terminal(self.stream) if enabled is None else enabled
        self.count, self.info = 0, ""
        self._start = time.perf_counter()
        self._drawn = 0  # length of the last line drawn (to blank leftovers)
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this Progress counts by hand: call update()")
        try:
            for item in self.iterable:
                if self.label is not None:
                    self.info = self.label(item)
                self._draw()
                yield item
                self.count += 1
            self.info = "done" if self.label is not None else self.info
        finally:
            self.close()

    def __enter__(self) -> Progress[T]:
        self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, info: str | None = None) -> None:
        """Advance by ``n`` steps; ``info`` replaces the text after the bar."""
        self.count += n
        if info is not None:
            self.info = info
        self._draw()

    def close(self) -> None:
        """Draw the final state and end the line (once; no-op when disabled)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled and self._drawn:
            self._draw(final=True)

    def _line(self) -> str:
        secs = time.perf_counter() - self._start
        if self.total:
            done = min(self.width, int(self.width * self.count / self.total))
            bar = "#" * done + "." * (self.width - done)
            counter = f"[{bar}] {self.count}/{self.total}"
        else:
            counter = f"{self.count}"
        head = f"{self.desc} " if self.desc else ""
        tail = f" {self.info}" if self.info else ""
        return f"{head}{counter} {secs:5.1f}s{tail}"

    def _draw(self, final: bool = False) -> None:
        if not self.enabled or (self._closed and not final):
            return
        line = self._line()
        pad = " " * max(0, self._drawn - len(line))
        self.stream.write("\r" + line + pad + ("\n" if final else ""))
        self.stream.flush()
        self._drawn = len(line)


def progress(
    iterable: Iterable[T],
    desc: str = "",
    *,
    total: int | None = None,
    label: Callable[[T], str] | None = None,
) -> Progress[T]:
    """Iterate over ``iterable`` with a progress bar on standard error.

    The bar is drawn only when standard error is a terminal; in logs, pipes,
    CI and notebooks this is plain iteration.

    Args:
      iterable: the work items.
      desc: a short name for the work (e.g. ``"autotune"``).
      total: the number of items, when ``len(iterable)`` does not work.
      label: called with each item as it starts; shown after the bar.

    Returns:
      An iterable over the same items.

    Example:
      >>> sum(progress(range(5), "adding"))
      10
    """
    return Progress(iterable, desc, total=total, label=label)
