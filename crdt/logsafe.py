"""Client-supplied text (a request path, a name, an error about them) made safe for a log
line: a ``%0a`` or NUL in a URL must not start a forged line of its own."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with every character that is not printable escaped the way ``ascii()``
    escapes it (``\\n``, ``\\x00``, ``\\u202e``...); printable text is left as it is.
    Not printable includes U+0085, U+2028 and U+2029, which some log viewers break lines
    at, and the bidi controls (U+202A-U+202E, U+2066-U+2069), which reorder a line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
