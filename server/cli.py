"""``weft serve`` and ``weft token create``.

Every ``serve`` flag also reads its ``WEFT_*`` environment variable (flags win); settings
without a flag (quotas, queue sizes, timeouts) are set through the environment only, see
:class:`server.config.Settings`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings

# ``weft --help`` and ``weft token create --help`` import this module: it loads no
# pydantic, aiohttp, jwt or pycrdt until a command runs. These two mirror
# server.auth.SCOPES and KEY_ALGORITHMS (server.auth imports aiohttp.web); a unit test
# checks that they are the same.
SCOPES = ("read", "write", "admin")
KEY_ALGORITHMS = ("RS256", "ES256")
MAX_TTL_SECONDS = 366 * 86_400  # server.auth.MAX_TTL_SECONDS: a year and a day
_TTL = re.compile(r"^\s*([0-9]+)\s*([smhdw]?)\s*$")  # ASCII digits: int() takes "٣" too
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# flag -> Settings field (a flag left out falls back to WEFT_<FIELD>, then the default)
SERVE_DESCRIPTION = (
    "Run the weft sync server. Every flag also reads its WEFT_* environment variable "
    "(flags win); settings without a flag (quotas such as WEFT_MAX_UPDATE_BYTES and "
    "WEFT_TENANT_QUOTAS, queue sizes, timeouts) are read from the environment only: "
    "see the README's 'Running the server' and server/config.py."
)
_SERVE_FLAGS = {
    "host": "host",
    "port": "port",
    "store": "store",
    "secret": "secret",
    "public_key": "public_key",
    "insecure": "insecure",
    "log_level": "log_level",
    "room_idle_seconds": "room_idle_seconds",
}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve`` and ``token create``."""
    serve = sub.add_parser("serve", help="run the sync server", description=SERVE_DESCRIPTION)
    add_serve_arguments(serve)
    serve.set_defaults(handler=run_serve)

    token = sub.add_parser("token", help="issue access tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND")
    create = token_sub.add_parser("create", help="print a signed token")
    add_token_arguments(create)
    create.set_defaults(handler=run_token_create)
    token.set_defaults(handler=lambda _args: _usage(token))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--host", help="address to listen on (WEFT_HOST, default 127.0.0.1)")
    a("--port", type=int, help="port (WEFT_PORT, default 8765; 0 picks a free one)")
    a(
        "--store",
        help="sqlite:///path/weft.db or fdb://[CLUSTER_FILE] (WEFT_STORE, "
        "default sqlite:///./weft-data/weft.db)",
    )
    a("--secret", help="HS256 token secret; turns auth on (WEFT_SECRET)")
    a(
        "--public-key",
        help="PEM public key (text or file): RSA for RS256 tokens, EC P-256 for ES256 "
        "(WEFT_PUBLIC_KEY)",
    )
    a(
        "--insecure",
        action="store_true",
        default=None,
        help="allow running without auth on a non-loopback address, and taking requests "
        "from web pages of other sites (WEFT_INSECURE)",
    )
    a("--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (WEFT_LOG_LEVEL, default INFO)")
    a(
        "--room-idle-seconds",
        type=float,
        help="unload a document this long after its last peer left, seconds "
        "(WEFT_ROOM_IDLE_SECONDS, default 30; 0: at once)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from flags over ``WEFT_*`` environment variables over defaults."""
    from server.config import Settings

    flags = {field: getattr(args, flag) for flag, field in _SERVE_FLAGS.items()}
    return Settings(**{k: v for k, v in flags.items() if v is not None})


_UNSAID_VALUES = {"secret", "public_key"}  # never echoed: a secret, or a key (or a path said)


def _setting_error(
    args: argparse.Namespace, loc: tuple[int | str, ...], message: str, given: object
) -> str:
    """A setting's validation error, named as the operator gave it: ``--port`` when
    the flag was given, else ``WEFT_PORT`` (the setting's field name meant nothing to
    one who never wrote it), with the value for a plain one."""
    if not loc:
        return message
    field, inner = str(loc[0]), ".".join(str(part) for part in loc[1:])
    flag = next((f for f, name in _SERVE_FLAGS.items() if name == field), None)
    if flag is not None and getattr(args, flag, None) is not None:
        where = "--" + flag.replace("_", "-")
    else:
        where = f"WEFT_{field.upper()}"
    if inner:
        where += f" ({inner})"
    plain = isinstance(given, str | int | float) and repr(given) not in message
    if field not in _UNSAID_VALUES and plain:
        message += f" (given: {given!r})"
    return f"{where}: {message}"


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from server.main import run  # aiohttp and the app load only when serving

    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")  # a validator's own words
            print(
                f"weft serve: {_setting_error(args, error['loc'], message, error.get('input'))}",
                file=sys.stderr,
            )
        return 2
    except SettingsError as exc:  # a WEFT_* variable that should hold JSON does not
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"WEFT_{field.group(1).upper()}" if field else "a WEFT_* variable"
        print(f"weft serve: {name} is not valid JSON ({exc.__cause__ or exc})", file=sys.stderr)
        return 2
    return run(settings)


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``python -m server``: the same flags as ``weft serve``."""
    parser = argparse.ArgumentParser(prog="python -m server", description=SERVE_DESCRIPTION)
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    from client.cli import refuse_non_utf8_locations  # as `weft serve` checks it

    refuse_non_utf8_locations(parser, args)
    return run_serve(args)


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--tenant", required=True, help="the tenant the token reaches")
    a(
        "--project",
        action="append",
        dest="projects",
        metavar="PROJECT",
        help="a project the token reaches (repeatable; default: all of the tenant's)",
    )
    a(
        "--user",
        default=None,
        help="the token's subject, not empty (default: your login name)",
    )
    a("--scope", choices=SCOPES, default="write", help="read, write or admin (default write)")
    a(
        "--ttl",
        default="1h",
        help="lifetime: 3600, 90s, 30m, 1h, 7d, 2w (default 1h; at most 366d)",
    )
    a("--secret", default=None, help="HS256 secret (default: WEFT_SECRET)")
    a(
        "--private-key",
        default=None,
        type=Path,  # a file's name may hold any bytes (text arguments must be UTF-8)
        metavar="FILE",
        help="PEM private key file for RS256/ES256 (default: WEFT_PRIVATE_KEY)",
    )
    a(
        "--algorithm",
        choices=("HS256", *KEY_ALGORITHMS),
        default=None,
        help="signing algorithm (default HS256, or RS256/ES256 to match --private-key)",
    )
    a(
        "--audience",
        default=None,
        help="the token's 'aud' claim, which a server run with WEFT_JWT_AUDIENCE requires "
        "and one run without it refuses (default: WEFT_JWT_AUDIENCE; none if unset)",
    )
    a(
        "--issuer",
        default=None,
        help="the token's 'iss' claim, which a server run with WEFT_JWT_ISSUER requires "
        "(default: WEFT_JWT_ISSUER; none if unset)",
    )


def parse_ttl(text: str) -> int:
    """``--ttl``: seconds, or a number with s, m, h, d or w; from 1 s to 366 days."""
    match = _TTL.match(text)
    digits = match[1].lstrip("0") if match else ""
    if not match or not digits:
        raise ValueError(f"bad ttl {text!r}: use seconds or a number with s, m, h, d or w")
    # (int() of a 5,000-digit number is a ValueError of its own: never that far)
    seconds = int(digits) * _UNITS[match[2]] if len(digits) <= 20 else MAX_TTL_SECONDS + 1
    if seconds > MAX_TTL_SECONDS:
        raise ValueError(
            f"ttl {text.strip()[:40]!r} is too long: at most 366 days "
            f"({MAX_TTL_SECONDS} seconds, 366d)"
        )
    return seconds


def run_token_create(args: argparse.Namespace) -> int:
    from server.auth import issue_token

    # Set but empty (``WEFT_SECRET=``) is an empty secret, said so, as ``weft serve`` does.
    secret = args.secret if args.secret is not None else os.environ.get("WEFT_SECRET")
    # A flag beats the environment: --secret signs HS256 even with WEFT_PRIVATE_KEY set
    # (the variable's key signed RS256 instead, a token a secret-only server refused).
    key_file = args.private_key or (
        None if args.secret is not None else os.environ.get("WEFT_PRIVATE_KEY")
    )
    # As ``weft serve`` reads them (an empty one is none: no claim)
    audience = args.audience if args.audience is not None else _env("WEFT_JWT_AUDIENCE")
    issuer = args.issuer if args.issuer is not None else _env("WEFT_JWT_ISSUER")
    if args.user is not None and not args.user.strip():  # it took the login name, silently
        print(
            "weft token create: --user is empty: give the token's user, or leave --user "
            "out for your login name",
            file=sys.stderr,
        )
        return 2
    try:
        ttl = parse_ttl(args.ttl)
        private_key = _private_key(args.private_key, key_file, args.algorithm)
        algorithm = args.algorithm or (private_key[1] if private_key else "HS256")
        token = issue_token(
            secret=secret,
            private_key=private_key[0] if private_key else None,
            algorithm=algorithm,
            tenant=args.tenant,
            projects=args.projects,
            user=args.user if args.user is not None else _login(),
            scope=args.scope,
            ttl_seconds=ttl,
            audience=audience or None,
            issuer=issuer or None,
        )
    except (ValueError, OSError) as exc:
        print(f"weft token create: {exc}", file=sys.stderr)
        if secret is None and not key_file and "needs a" in str(exc):
            print("  set --secret or WEFT_SECRET (or --private-key)", file=sys.stderr)
        return 2
    print(token)
    return 0


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _private_key(
    flag: Path | None, key_file: str | Path | None, algorithm: str | None
) -> tuple[str, str] | None:
    """The PEM text of the private key file (``--private-key`` or ``WEFT_PRIVATE_KEY``)
    and the algorithm it signs, or None without one; a ValueError naming the file and
    what is wrong with the key (not PEM, a public key, Ed25519, EC P-384, not the
    ``--algorithm``'s kind), where PyJWT's tracebacks were."""
    from server.auth import signing_key

    if not key_file or algorithm == "HS256":
        return None
    name = f"--private-key {flag}" if flag else f"WEFT_PRIVATE_KEY {key_file}"
    path = Path(key_file).expanduser()
    try:
        pem = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise ValueError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    try:
        _key, fits = signing_key(pem, algorithm)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return pem, fits


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "weft"
