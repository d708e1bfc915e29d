"""Client-supplied text (a request path, a name, an error about them) made safe for a log
line: a ``%0a`` or NUL in a URL must not start a forged line of its own."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with every character that is not printable escaped the way ``ascii()``
    escapes it (``\\n``, ``\\x00``, ``\\u202e``...); printable text is left as it is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
