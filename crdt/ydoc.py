"""Applying updates to a ``pycrdt.Doc`` without letting one bad update take a doc down.

An update can decode (its structs parse, even onto an empty document) and still make
pycrdt panic when it meets a document's existing state: pycrdt raises
``pyo3_runtime.PanicException``, which derives from ``BaseException`` and so slips past
every ``except Exception``. Every place that applies updates from the network or the log
goes through :func:`apply`, which turns that panic into a ``ValueError`` the caller
handles like any undecodable update. The document stays usable afterwards.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc


class UnusableUpdate(ValueError):
    """An update pycrdt could not integrate into a document (it decoded, or it did not)."""


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic surfaced by pyo3 (``pyo3_runtime.PanicException``)."""
    return type(exc).__name__ == "PanicException"


def apply(doc: Doc[Any], update: bytes) -> None:
    """``doc.apply_update(update)``; :class:`UnusableUpdate` if pycrdt refuses or panics."""
    try:
        doc.apply_update(update)
    except ValueError as exc:
        raise UnusableUpdate(f"update does not decode: {exc}") from None
    except BaseException as exc:
        if not is_panic(exc):
            raise
        raise UnusableUpdate(f"update cannot be integrated into the document: {exc}") from None


__all__ = ["UnusableUpdate", "apply", "is_panic"]
