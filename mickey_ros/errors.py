"""Typed errors of mickey_ros.

Every error carries a one-line message that names the input and what was expected, e.g.
``intrinsics0: expected 4 positive numbers FX FY CX CY, got fx=0.0``. The CLI prints that line
(``mickey-ros: error: <message>``) and exits with code 2; the Python API raises the same object.
Lower-level errors are chained with ``raise ... from err``.
"""
from __future__ import annotations


class MickeyError(Exception):
    """Base class of every error mickey_ros raises on purpose."""


class InputError(MickeyError, ValueError):
    """A user-provided value (image, intrinsics, shape, option) is not what the API expects."""


class ImageError(InputError):
    """An image is missing, unreadable, of the wrong dtype/shape, or too small for the network."""


class IntrinsicsError(InputError):
    """Camera intrinsics are malformed: wrong count/shape, non-finite, or focal length <= 0."""


class CheckpointError(MickeyError):
    """A checkpoint or weight file is unreadable, unsafe, or does not match the model layout."""


class MissingWeightsError(CheckpointError, FileNotFoundError):
    """A required weight file (checkpoint or DINOv2 backbone) does not exist."""


class DependencyError(MickeyError, ImportError):
    """An optional dependency (onnx, onnxruntime) is not installed; the message gives the pip line."""


class DatasetError(MickeyError):
    """A dataset on disk (Map-free layout, ...) is missing files or has malformed lines."""


class SubmissionError(MickeyError):
    """A Map-free submission cannot be evaluated (e.g. negative confidence, no valid estimate)."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error's message (its type name when the message is empty)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def describe_error(err: BaseException) -> str:
    """A one-line reason for a skipped item: our typed errors' own line, else ``Type: first line``."""
    if isinstance(err, MickeyError):
        return first_line(err)
    text = first_line(err)
    return text if text == type(err).__name__ else f"{type(err).__name__}: {text}"
