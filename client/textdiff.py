"""A file's new text as minimal edits of its ``Y.Text``, and three-way text merges.

The edits are :mod:`crdt.textedits` (shared with time travel's revert), re-exported here
for the workspace: :func:`diff` turns a file's old and new text into a short list of
:class:`Op` so that a concurrent edit elsewhere in the same document survives the merge,
and :func:`apply` makes them on the ``Y.Text`` (converting to pycrdt's UTF-8 offsets).

:func:`merge3` and :func:`merge3_both` (:mod:`crdt.merge3`, re-exported here) merge a
file that changed on disk with its document that changed too (remote updates not
written yet, or a crash in between).
"""

from __future__ import annotations

from crdt.merge3 import merge3, merge3_both
from crdt.textedits import (
    CHAR_DIFF_LIMIT,
    NotText,
    Op,
    apply,
    apply_ops,
    check_text,
    common_prefix,
    common_suffix,
    diff,
    line_diff,
)

__all__ = [
    "CHAR_DIFF_LIMIT",
    "NotText",
    "Op",
    "apply",
    "apply_ops",
    "check_text",
    "common_prefix",
    "common_suffix",
    "diff",
    "line_diff",
    "merge3",
    "merge3_both",
]
