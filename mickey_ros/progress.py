"""A progress line on stderr that log lines never run into.

``mickey-ros bag`` and ``eval-pairs`` redraw one ``\\r``-updated line while they work. A log record written while
that line is open would continue it (``0/3 pairsmickey-ros: INFO: ...``); :class:`ProgressLine` ends the line
before any record reaches a handler of the root logger, and the next update draws it again below the record.
"""
from __future__ import annotations

import logging
import sys


class ProgressLine(logging.Filter):
    """The ``\\r``-updated line (silent when ``enabled`` is false); :meth:`end` closes it."""

    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.enabled, self._open = enabled, False
        self._handlers: list[logging.Handler] = []

    def show(self, text: str) -> None:
        """Draw ``text`` over the current line (on a new line after a log record)."""
        if not self.enabled:
            return
        if not self._handlers:
            self._handlers = list(logging.getLogger().handlers)
            for handler in self._handlers:
                handler.addFilter(self)
        print(f"\r{text}", end="", file=sys.stderr, flush=True)
        self._open = True

    def end(self) -> None:
        """End the line (a newline if one is open) and stop watching the log handlers."""
        self._close()
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers = []

    def filter(self, record: logging.LogRecord) -> bool:  # logging.Filter: every record passes, after a newline
        self._close()
        return True

    def _close(self) -> None:
        if self._open:
            print(file=sys.stderr, flush=True)
            self._open = False
