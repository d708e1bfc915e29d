"""Who is calling, and what they may touch: JWTs (PyJWT) mapped to a :class:`Principal`.

Tokens are HS256 with the server secret, or RS256/ES256 verified with a configured
public key (so an identity provider such as Keycloak or Auth0 can issue them). Claims:

- ``sub``: the user; ``tenant``: the one tenant the token reaches;
- ``projects``: a list of project names, or ``"*"`` for all of the tenant's projects
  (required: a token without it is refused, not taken as ``"*"``);
- ``scope``: ``read`` | ``write`` | ``admin`` (a space-separated OAuth scope string is
  accepted too: the highest of those three it names wins);
- ``exp``: required;
- ``aud``: must match ``WEFT_JWT_AUDIENCE``; without it configured, a token that has
  one is refused (it was issued for some audience, maybe another service).

With auth off (no secret, no public key: only allowed on loopback) every caller is an
admin of every tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web
from cryptography.exceptions import UnsupportedAlgorithm

from crdt.errors import PermissionDenied
from crdt.keys import check_name
from server.appkeys import AUTH

SCOPES = ("read", "write", "admin")
MAX_EXP = 1e12  # an ``exp`` past this (year 33658) is taken as never (10**400 is no float)
ANY_TENANT = "*"
HMAC_ALGORITHMS = ("HS256",)
KEY_ALGORITHMS = ("RS256", "ES256")


NO_AUDIENCE_EXPECTED = (
    "invalid token: it has an 'aud' claim and this server expects none "
    "(set WEFT_JWT_AUDIENCE to accept it)"
)
"""Why a token with an ``aud`` claim is refused by a server run without
``WEFT_JWT_AUDIENCE``: it was issued for some audience, maybe another service (PyJWT
refuses it too unless told not to check, which this server did: any ``aud`` passed).
Short enough for a WebSocket close reason (123 bytes)."""


class InvalidToken(PermissionDenied):
    """No token, or one that is malformed, badly signed or expired (HTTP 401, close 4401)."""


@dataclass(frozen=True)
class Principal:
    """The verified caller: one user, one tenant, some projects, one scope."""

    user: str
    tenant: str
    projects: tuple[str, ...] | None  # None: every project of the tenant
    scope: str
    # When the token stops being valid (its ``exp`` plus the leeway, Unix seconds);
    # None with auth off. A WebSocket connection is closed then (4401 "token expired").
    expires: float | None = field(default=None, compare=False)

    def covers(self, tenant: str, project: str) -> bool:
        """Whether the token reaches ``tenant``/``project`` at all (any scope)."""
        if self.tenant not in (ANY_TENANT, tenant):
            return False
        return self.projects is None or project in self.projects

    def can_read(self, tenant: str, project: str) -> bool:
        return self.scope in SCOPES and self.covers(tenant, project)

    def can_write(self, tenant: str, project: str) -> bool:
        return self.scope in ("write", "admin") and self.covers(tenant, project)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


MAX_TTL_SECONDS = 366 * 86_400
"""The longest lifetime ``issue_token`` (``weft token create --ttl``) gives a token: a
year and a day. More is no session but a credential that never expires (and
``--ttl 9999999d`` overflowed the date with a traceback)."""

_CURVE_FOR = {"ES256": "secp256r1"}  # ES256 is ECDSA on P-256 (prime256v1, secp256r1)


def _kind(key: object) -> str:
    """A key's kind, for a person: "an RSA key", "an EC key on curve secp384r1", "an
    Ed25519 key"."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "an RSA key"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an EC key on curve {key.curve.name}"
    name = type(key).__name__.removesuffix("PrivateKey").removesuffix("PublicKey")
    return f"an {name} key" if name[:1] in "AEIOU" else f"a {name} key"


def _algorithm_of(key: object) -> str | None:
    """RS256 for an RSA key, ES256 for an EC key on P-256, None for any other key."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ES256" if key.curve.name == _CURVE_FOR["ES256"] else None
    return None


def _unusable(key: object, algorithm: str | None) -> str:
    """Why ``key`` cannot be used (for ``algorithm``, when one is asked for)."""
    kind = _kind(key)
    fits = _algorithm_of(key)
    if algorithm is not None and fits is not None:  # a usable key, for the other algorithm
        need = "an RSA key" if algorithm == "RS256" else "an EC key on curve P-256"
        return f"it is {kind}, and {algorithm} needs {need} (this key signs {fits})"
    if kind.startswith("an EC key"):
        return f"it is {kind}, and ES256 needs curve P-256 (prime256v1)"
    return f"it is {kind}; weft takes RSA keys (RS256) and EC keys on curve P-256 (ES256)"


def signing_key(pem: str, algorithm: str | None = None) -> tuple[Any, str]:
    """The private key in ``pem`` and the algorithm it signs (RS256 for RSA, ES256 for
    EC P-256; ``algorithm``, when given, must be that one). ValueError, a message for a
    person, for anything else: not PEM, a public key, an encrypted key, another kind of
    key (Ed25519, EC P-384) or one that does not fit ``algorithm``."""
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )

    data = pem.encode("utf-8", "surrogateescape")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise ValueError(
            "the private key is encrypted, and weft cannot ask for its passphrase "
            "(write it unencrypted: openssl pkey -in KEY -out PLAIN.pem)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        try:
            load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError(
                "not a PEM private key (-----BEGIN PRIVATE KEY----- ...): an RSA key, or "
                "an EC key on curve P-256"
            ) from None
        raise ValueError(
            "it is a public key: tokens are signed with the private key (the server is "
            "given the public one)"
        ) from None
    fits = _algorithm_of(key)
    if fits is None or (algorithm is not None and algorithm != fits):
        raise ValueError(f"the private key cannot be used: {_unusable(key, algorithm)}")
    return key, fits


# An OpenSSH public key line: its type, a space, its key in base64 (then a comment).
SSH_KEY_LINE = re.compile(r"(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+) [A-Za-z0-9+/]+={0,2}(\s.*)?")


def is_ssh_key_line(text: str) -> bool:
    """Whether ``text`` is an OpenSSH public key line (not a file name such as
    ``ssh-jwt.pub``)."""
    return SSH_KEY_LINE.fullmatch(text.strip()) is not None


def verifying_key(pem: str) -> tuple[Any, str]:
    """The public key in ``pem`` (PEM, or an OpenSSH public key line, as PyJWT takes)
    and the one algorithm it verifies (RS256 for RSA, ES256 for EC P-256). ValueError,
    a message for a person, for anything else: not PEM, a private key, another kind of
    key (Ed25519, EC P-384)."""
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
        load_ssh_public_key,
    )

    data = pem.encode("utf-8", "surrogateescape")
    try:
        if is_ssh_key_line(pem):
            key: Any = load_ssh_public_key(data.strip())
        else:
            key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            load_pem_private_key(data, password=None)
        except (TypeError, ValueError, UnsupportedAlgorithm):
            raise ValueError(
                "not a PEM public key (-----BEGIN PUBLIC KEY----- ...) nor an OpenSSH one "
                "(ssh-rsa ...): an RSA key, or an EC key on curve P-256"
            ) from None
        raise ValueError(
            "it is a private key: give the server the public key only "
            "(openssl pkey -in KEY -pubout)"
        ) from None
    fits = _algorithm_of(key)
    if fits is None:
        raise ValueError(f"the public key cannot verify tokens: {_unusable(key, None)}")
    return key, fits


class Authenticator:
    """Verifies tokens; ``enabled`` is False when no key is configured (dev mode)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0,
    ) -> None:
        self._secret = secret
        # Parsed once, here: a key that is not an RSA or EC P-256 public key is a
        # ValueError now (the server refuses to start), not a 500 or a garbled 401 for
        # every token later.
        self._public_key: Any = None
        self._key_algorithm: str | None = None
        if public_key is not None:
            self._public_key, self._key_algorithm = verifying_key(public_key)
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway
        self.enabled = secret is not None or public_key is not None

    def verify(self, token: str | None) -> Principal:
        """The principal a token stands for; :class:`InvalidToken` when it is not valid."""
        if not self.enabled:
            return Principal(user="anonymous", tenant=ANY_TENANT, projects=None, scope="admin")
        if not token:
            raise InvalidToken("missing token: pass ?token= or Authorization: Bearer")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm in HMAC_ALGORITHMS:
            key = self._secret
        elif algorithm in KEY_ALGORITHMS:
            key = self._public_key
        else:
            raise InvalidToken(f"token algorithm {algorithm!r} is not accepted")
        if key is None:
            raise InvalidToken(f"token algorithm {algorithm} is not configured on this server")
        if algorithm in KEY_ALGORITHMS and algorithm != self._key_algorithm:
            raise InvalidToken(
                f"token algorithm {algorithm} does not fit this server's public key "
                f"({self._key_algorithm})"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # ``aud`` is always checked: without an audience configured, a token
                # that names one (it was issued for another service) is refused.
                options={"require": ["exp", "sub", "tenant"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError as exc:
            if self._audience is None:
                raise InvalidToken(NO_AUDIENCE_EXPECTED) from None
            raise InvalidToken(f"invalid token: {exc}") from None
        except jwt.InvalidKeyError:  # the key checked at start: should not happen
            raise InvalidToken(f"this server's key cannot verify {algorithm} tokens") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        except (TypeError, ValueError):  # a key problem, not the caller's 500
            raise InvalidToken(f"this server's key cannot verify {algorithm} tokens") from None
        try:  # PyJWT checked it is in the future (and took "123" for 123)
            exp = float(claims["exp"])
        except (OverflowError, TypeError, ValueError):  # 10**400 is no float: never
            exp = MAX_EXP
        expires = exp + self._leeway if exp < MAX_EXP else None
        return replace(_principal(claims), expires=expires)


def _principal(claims: dict[str, Any]) -> Principal:
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not tenant or tenant == ANY_TENANT:
        raise InvalidToken("token has no valid 'tenant' claim")
    # Required: a token an identity provider issued without it (no claim mapper set up)
    # must not reach every project of its tenant by default.
    if "projects" not in claims:
        raise InvalidToken("token has no 'projects' claim (a list of project names, or '*')")
    raw_projects = claims["projects"]
    projects: tuple[str, ...] | None
    if raw_projects == ANY_TENANT:
        projects = None
    elif isinstance(raw_projects, list) and all(isinstance(p, str) for p in raw_projects):
        projects = tuple(raw_projects)
    else:
        raise InvalidToken("token 'projects' claim must be a list of names or '*'")
    raw_scope = claims.get("scope", "read")
    named = set(raw_scope.split()) if isinstance(raw_scope, str) else set()
    scopes = [s for s in SCOPES if s in named]
    if not scopes:
        raise InvalidToken("token 'scope' claim must name read, write or admin")
    user = str(claims["sub"])
    if not user.strip():  # as issue_token refuses it: an update's author is no one
        raise InvalidToken("token 'sub' claim is empty: a token names its user")
    try:  # JSON allows "\ud800"; no UTF-8 does, so nothing the user wrote could be stored
        user.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidToken("token 'sub' claim is not valid Unicode (a lone surrogate)") from None
    return Principal(user=user, tenant=tenant, projects=projects, scope=scopes[-1])


MIN_SECRET_BYTES = 32
"""An HS256 secret's least length: 256 bits (RFC 7518 3.2: a key of the hash's size or
more; PyJWT warns under it, and a short one can be guessed offline from any token)."""


def check_secret(secret: str) -> None:
    """Refuse an empty or short HMAC secret (ValueError, a message for a person)."""
    size = len(secret.encode())
    if not secret.strip():
        raise ValueError("secret is empty: set a real one, or leave WEFT_SECRET unset")
    if size < MIN_SECRET_BYTES:
        raise ValueError(
            f"secret is {size} bytes: HS256 needs at least {MIN_SECRET_BYTES} "
            "(make one with: openssl rand -hex 32)"
        )


def issue_token(
    *,
    secret: str | None = None,
    private_key: str | None = None,
    algorithm: str = "HS256",
    tenant: str,
    projects: list[str] | None,
    user: str,
    scope: str,
    ttl_seconds: int,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A signed token: HS256 with ``secret``, or RS256/ES256 with ``private_key`` (PEM);
    with ``aud``/``iss`` claims when ``audience``/``issuer`` are given (a server run with
    ``WEFT_JWT_AUDIENCE``/``WEFT_JWT_ISSUER`` requires them). The tenant and project
    names are checked as the server checks a URL's (a token for ``a/b`` could never
    reach anything): :class:`~crdt.errors.BadPath`, a ValueError. An empty ``secret``
    is refused as the server refuses it ("secret is empty"), not taken for none."""
    check_name("tenant", tenant)
    for project in projects or ():
        check_name("project", project)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if ttl_seconds <= 0:
        raise ValueError("ttl must be positive")
    if ttl_seconds > MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be at most {MAX_TTL_SECONDS} seconds (366 days)")
    if not user.strip():
        raise ValueError("user is empty: a token names its user ('sub')")
    key: Any
    if algorithm in HMAC_ALGORITHMS:
        if secret is None:
            raise ValueError(f"{algorithm} needs a secret")
        check_secret(secret)
        key = secret
    elif algorithm in KEY_ALGORITHMS:
        if not private_key:
            raise ValueError(f"{algorithm} needs a private key")
        key, _ = signing_key(private_key, algorithm)  # ValueError: a key that cannot sign
    else:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user,
        "tenant": tenant,
        "projects": ANY_TENANT if projects is None else list(projects),
        "scope": scope,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
    }
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm)


TWO_TOKENS = (
    "two different tokens (in ?token= and Authorization: Bearer, or either twice): send one"
)


def token_of(request: web.Request) -> str | None:
    """The token from ``?token=`` or ``Authorization: Bearer``. :class:`InvalidToken`
    when the request carries two different ones and auth is on: which is meant is not for
    the server to guess (the first ``?token=`` won, silently, over the header a proxy may
    have checked; so did the first of two ``Authorization`` headers over the second)."""
    given = request.query.getall("token", [])
    for header in request.headers.getall("Authorization", []):
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given.append(value.strip())
    tokens = {token for token in given if token}
    if len(tokens) > 1 and request.app[AUTH].enabled:  # auth off: no token means anything
        raise InvalidToken(TWO_TOKENS)
    return tokens.pop() if tokens else None


def check(principal: Principal, tenant: str, project: str, scope: str) -> None:
    """Raise :class:`PermissionDenied` unless ``principal`` has ``scope`` on the project."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if not principal.covers(tenant, project):
        raise PermissionDenied(f"token does not grant access to {tenant}/{project}")
    if SCOPES.index(principal.scope) < SCOPES.index(scope):
        raise PermissionDenied(f"token scope {principal.scope!r} does not allow {scope}")


async def require(request: web.Request, tenant: str, project: str, scope: str) -> Principal:
    """The caller of a REST handler, checked for ``scope`` on ``tenant``/``project``."""
    principal = request.app[AUTH].verify(token_of(request))
    check(principal, tenant, project, scope)
    return principal
