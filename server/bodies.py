"""The JSON bodies the REST API takes (``POST revert``, ``conflicts``, ``resolve``): one
object, read and checked in one place.

Whatever a client sends is a 400 (``ProtocolError``), never a 500: a key the route does
not take (named), a body that is not
JSON, not in its declared charset (or in one Python does not know), nested deeper than
the decoder's recursion limit (``[[[[...`` 100,000 deep raised ``RecursionError``), or
not an object. A string field holding a lone surrogate (``"\\ud800"`` is valid JSON, but
no UTF-8 encodes it, so storing it failed) is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crdt.errors import ProtocolError
from server.logsafe import printable

NOT_AN_OBJECT = "the request body must be a JSON object"


async def json_object(request: web.Request, takes: tuple[str, ...]) -> dict[str, Any]:
    """The request's body as a JSON object; ``{}`` when there is no body. A body over the
    request's size limit raises aiohttp's ``HTTPRequestEntityTooLarge`` (a JSON 413).

    A key other than ``takes`` is a 400 naming it: a mistyped ``"pth"`` in a revert's
    body reverted the whole project, where ``"path"`` names one document, and a
    resolution sent as ``"note"`` (the CLI's flag) was dropped, for good."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except RecursionError:
        raise ProtocolError(f"{NOT_AN_OBJECT}: this one is nested too deeply") from None
    except LookupError:  # Content-Type: ...; charset=nonsense (bytes.decode refuses it)
        raise ProtocolError(
            f"{NOT_AN_OBJECT}: unknown charset {str(request.charset)[:40]!r} (send UTF-8)"
        ) from None
    except ValueError:  # not JSON, or not in its charset (UnicodeDecodeError)
        raise ProtocolError(NOT_AN_OBJECT) from None
    if not isinstance(body, dict):
        raise ProtocolError(NOT_AN_OBJECT)
    unknown = sorted(set(body) - set(takes))
    if unknown:
        names = ", ".join(repr(printable(k)[:40]) for k in unknown)
        raise ProtocolError(f"the body takes no {names} key: it takes {', '.join(takes)}")
    return body


def unicode_text(name: str, value: str) -> str:
    """``value`` if every character of it can be stored (UTF-8 has no lone surrogates);
    a :class:`ProtocolError` naming the field ``name`` otherwise."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(
            f'"{name}" is not valid Unicode: a lone surrogate at character {exc.start}'
        ) from None
    return value


__all__ = ["NOT_AN_OBJECT", "json_object", "unicode_text"]
