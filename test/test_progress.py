"""The progress line of ``bag`` and ``eval-pairs``: log records never run into it."""
from __future__ import annotations

import logging
import subprocess
import sys

from mickey_ros.progress import ProgressLine

SCRIPT = """
import logging
from mickey_ros.progress import ProgressLine
logging.basicConfig(level=logging.INFO, format="tool: %(levelname)s: %(message)s")
line = ProgressLine(True)
line.show("0/3 pairs")
logging.getLogger("x").info("something happened")
line.show("1/3 pairs")
line.show("3/3 pairs")
line.end()
logging.getLogger("x").warning("after the bar")
"""


def test_a_log_record_ends_the_open_line_and_the_bar_continues_below_it():
    err = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, check=True).stderr  # bytes: \r kept
    assert err == (b"\r0/3 pairs\ntool: INFO: something happened\n\r1/3 pairs\r3/3 pairs\n"
                   b"tool: WARNING: after the bar\n")
    assert b"pairstool" not in err


def test_disabled_line_prints_nothing_and_touches_no_handler(capsys):
    line = ProgressLine(False)
    line.show("1/2")
    line.end()
    assert capsys.readouterr().err == ""
    assert all(line not in h.filters for h in logging.getLogger().handlers)
