"""Encoded image bytes (PNG, JPEG, ...) -> pixels through OpenCV, without OpenCV or libpng writing to stderr, and
:func:`read_image` for image files (the command line, eval-pairs, the node's reference image).

A damaged file must give the caller's one-line error and nothing else. OpenCV logs its decoder failures itself
(``[ WARN:0@...] global grfmt_png.cpp ...``): :func:`imdecode_quiet` silences OpenCV's logging for the decode.
libpng prints its own ``libpng error: ...`` line, which no OpenCV setting reaches: :func:`png_problem` finds
the damage libpng would stop at (a truncated file, a broken critical chunk) before any decoding.
"""
from __future__ import annotations

import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mickey_ros.errors import ImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_lock = threading.Lock()
_depth = 0
_saved_level: Any = None


def png_problem(data: bytes | np.ndarray) -> str | None:
    """Why libpng would fail on these PNG bytes, or None (also None for bytes that are not PNG).

    Walks the chunks: each must fit in the data, a critical chunk (upper-case first letter: IHDR, PLTE, IDAT,
    IEND) must have a correct CRC, and the data must reach IEND. The compressed pixel stream is not inflated.

    Args:
        data: the file's bytes (``bytes`` or a uint8 array).

    Returns:
        e.g. ``"truncated PNG (the data ends inside its IDAT chunk)"``, or None.
    """
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1)
    view = memoryview(data).cast("B")
    if bytes(view[:8]) != PNG_SIGNATURE:
        return None
    pos = 8
    while pos + 8 <= len(view):
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        if not kind.isalpha():
            return f"damaged PNG (no valid chunk at byte {pos})"
        label = kind.decode("ascii")
        end = pos + 12 + length
        if end > len(view):
            return f"truncated PNG (the data ends inside its {label} chunk)"
        if kind[:1].isupper() and zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return f"damaged PNG (CRC error in its {label} chunk)"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated PNG (the data ends before its IEND chunk)"


def _log_level_api() -> tuple[Any, Any, int] | None:
    """(getLogLevel, setLogLevel, SILENT) of this OpenCV build, or None when it has none."""
    import cv2

    api = getattr(getattr(cv2, "utils", None), "logging", None)
    if api is not None and hasattr(api, "setLogLevel"):
        return api.getLogLevel, api.setLogLevel, int(getattr(api, "LOG_LEVEL_SILENT", 0))
    if hasattr(cv2, "setLogLevel") and hasattr(cv2, "getLogLevel"):
        return cv2.getLogLevel, cv2.setLogLevel, 0
    return None


@contextmanager
def opencv_silenced() -> Iterator[None]:
    """OpenCV's own logging off inside the block (nested and concurrent blocks restore the level once)."""
    global _depth, _saved_level
    api = _log_level_api()
    if api is None:
        yield
        return
    get_level, set_level, silent = api
    with _lock:
        if _depth == 0:
            _saved_level = get_level()
            set_level(silent)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                set_level(_saved_level)


def imdecode_quiet(data: np.ndarray, flags: int) -> np.ndarray | None:
    """``cv2.imdecode(data, flags)`` with OpenCV's logging silenced; None for empty or undecodable bytes.

    Call :func:`png_problem` first: libpng's own messages are not OpenCV logging.
    """
    import cv2

    if not data.size:
        return None
    with opencv_silenced():
        return cv2.imdecode(data, flags)


def read_image(path: str | Path, name: str) -> np.ndarray:
    """Read an image file as uint8 ``[H, W, 3]`` RGB.

    Raises:
        ImageError: the file does not exist, is a directory, or cannot be decoded as an image (nothing else is
            written to stderr: OpenCV's and libpng's own messages are kept out).
    """
    import cv2

    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{name}: {p} is a directory, not an image file")
    if not p.is_file():
        raise ImageError(f"{name}: file not found: {p}")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as err:
        raise ImageError(f"{name}: cannot read {p}: {err.strerror}") from err
    problem = png_problem(data)
    if problem:
        raise ImageError(f"{name}: cannot decode {p} as an image: {problem}")
    bgr = imdecode_quiet(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{name}: cannot decode {p} as an image (expected PNG, JPEG or another format OpenCV reads)")
    return np.ascontiguousarray(bgr[:, :, ::-1])
