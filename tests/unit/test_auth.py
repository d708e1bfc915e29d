"""Tokens and principals: who may read and write what."""

from __future__ import annotations

import time

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from crdt.errors import PermissionDenied
from server.appkeys import AUTH
from server.auth import (
    NO_AUDIENCE_EXPECTED,
    Authenticator,
    InvalidToken,
    Principal,
    issue_token,
    require,
)

SECRET = "unit-test-secret-0123456789abcdefghij"


def hs(**overrides: object) -> str:
    claims: dict[str, object] = {
        "sub": "ada",
        "tenant": "acme",
        "projects": "*",
        "scope": "write",
        "exp": int(time.time()) + 86_400,  # parametrize builds tokens at collection time
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


def pem_pair(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


# --- Principal -------------------------------------------------------------------------


def test_a_principal_reaches_only_its_tenant_and_projects() -> None:
    p = Principal("ada", "acme", ("site",), "write")
    assert p.can_read("acme", "site") and p.can_write("acme", "site")
    assert not p.can_read("acme", "blog")
    assert not p.can_read("other", "site")
    assert not p.is_admin


def test_scopes_are_ordered_read_write_admin() -> None:
    reader = Principal("ada", "acme", None, "read")
    assert reader.can_read("acme", "x") and not reader.can_write("acme", "x")
    admin = Principal("ada", "acme", None, "admin")
    assert admin.can_write("acme", "x") and admin.is_admin


# --- verify ----------------------------------------------------------------------------


def test_auth_off_makes_everybody_an_admin_of_every_tenant() -> None:
    auth = Authenticator()
    assert not auth.enabled
    p = auth.verify(None)
    assert p.tenant == "*" and p.is_admin and p.can_write("anything", "at-all")


def test_a_valid_hs256_token() -> None:
    p = Authenticator(secret=SECRET).verify(hs(projects=["site", "blog"]))
    assert p == Principal("ada", "acme", ("site", "blog"), "write")


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("garbage", "malformed"),
        (hs(exp=int(time.time()) - 10), "expired"),
        (jwt.encode({"sub": "a", "tenant": "acme", "exp": 2**31}, "wrong" * 8, "HS256"), "invalid"),
        (hs(exp=None), "exp"),
        (hs(tenant=None), "tenant"),
        (hs(tenant="*"), "tenant"),
        (hs(projects="site"), "projects"),
        (hs(projects=None), "no 'projects' claim"),  # not taken as every project
        (hs(scope="superuser"), "scope"),
        (hs(sub=""), "'sub' claim is empty"),  # PyJWT requires it, but "" passes that
        (hs(sub=" "), "'sub' claim is empty"),
        (jwt.encode({"sub": "a", "tenant": "acme", "exp": 2**31}, None, "none"), "algorithm"),  # type: ignore[arg-type]
    ],
)
def test_bad_tokens_are_refused_with_a_clear_reason(token: str | None, words: str) -> None:
    with pytest.raises(InvalidToken, match=words):
        Authenticator(secret=SECRET).verify(token)


def test_invalid_token_is_a_permission_error() -> None:
    assert issubclass(InvalidToken, PermissionDenied)
    assert issubclass(InvalidToken, PermissionError)


def test_an_oauth_scope_string_maps_to_the_highest_weft_scope() -> None:
    assert Authenticator(secret=SECRET).verify(hs(scope="openid read write")).scope == "write"


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (rsa.generate_private_key(65537, 2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_public_key_tokens_from_an_identity_provider(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, algorithm: str
) -> None:
    private, public = pem_pair(key)
    token = issue_token(
        private_key=private,
        algorithm=algorithm,
        tenant="acme",
        projects=None,
        user="idp-user",
        scope="read",
        ttl_seconds=60,
    )
    p = Authenticator(public_key=public).verify(token)
    assert p == Principal("idp-user", "acme", None, "read")
    with pytest.raises(InvalidToken, match="not configured"):
        Authenticator(public_key=public).verify(hs())  # no secret on this server


def test_a_token_of_the_other_key_algorithm_is_a_clear_401() -> None:
    """An RS256 token on a server with an EC key was PyJWT's "Expected one of <generator
    object ...>"; a key the server could not parse made every token a 500."""
    rsa_private, _ = pem_pair(rsa.generate_private_key(65537, 2048))
    _, ec_public = pem_pair(ec.generate_private_key(ec.SECP256R1()))
    token = issue_token(
        private_key=rsa_private,
        algorithm="RS256",
        tenant="acme",
        projects=None,
        user="ada",
        scope="read",
        ttl_seconds=60,
    )
    with pytest.raises(
        InvalidToken, match=r"RS256 does not fit this server's public key \(ES256\)"
    ):
        Authenticator(public_key=ec_public).verify(token)
    with pytest.raises(ValueError, match="not a PEM public key"):
        Authenticator(public_key="-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")


def test_an_openssh_public_key_verifies_tokens_as_pem_does() -> None:
    """PyJWT takes an OpenSSH public key line; the key check at start took only PEM and
    refused a server that had run with one (a review)."""

    for private in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())):
        pem, _ = pem_pair(private)
        line = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        token = issue_token(
            private_key=pem,
            algorithm="RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256",
            tenant="acme",
            projects=None,
            user="ada",
            scope="read",
            ttl_seconds=60,
        )
        auth = Authenticator(public_key=line.decode() + "\n")
        assert auth.verify(token).user == "ada"
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    line = ed.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with pytest.raises(ValueError, match="it is an Ed25519 key"):
        Authenticator(public_key=line.decode())


def test_audience_and_issuer_are_checked_when_configured() -> None:
    auth = Authenticator(secret=SECRET, audience="weft", issuer="https://idp")
    assert auth.verify(hs(aud="weft", iss="https://idp")).user == "ada"
    with pytest.raises(InvalidToken):
        auth.verify(hs(aud="other", iss="https://idp"))
    with pytest.raises(InvalidToken):
        auth.verify(hs(aud="weft", iss="https://evil"))


def test_a_token_with_an_audience_is_refused_when_the_server_expects_none() -> None:
    """PyJWT refuses such a token by default; the server turned the check off without an
    audience configured, so a token issued for any other service (same IdP, same key)
    was taken. Empty audiences (``""``, ``[]``) say nothing and pass, as in PyJWT."""
    auth = Authenticator(secret=SECRET)
    for aud in ("other-service", ["weft", "other"]):
        with pytest.raises(InvalidToken) as refused:
            auth.verify(hs(aud=aud))
        assert str(refused.value) == NO_AUDIENCE_EXPECTED
        assert "set WEFT_JWT_AUDIENCE" in str(refused.value)
        assert len(str(refused.value).encode()) <= 123  # fits a WebSocket close reason
    for aud in ("", []):
        assert auth.verify(hs(aud=aud)).user == "ada"
    assert Authenticator(secret=SECRET, audience="weft").verify(hs(aud=["weft", "x"])).user


def test_a_lone_surrogate_in_sub_is_refused_not_stored() -> None:
    """It decodes from JSON, but no UTF-8 holds it: every update of its connection
    failed to commit (1011), and a conflict report was a 500."""
    with pytest.raises(InvalidToken, match="'sub' claim is not valid Unicode"):
        Authenticator(secret=SECRET).verify(hs(sub="ada\ud800"))


# --- issue_token -----------------------------------------------------------------------


def test_issued_tokens_round_trip() -> None:
    token = issue_token(
        secret=SECRET, tenant="acme", projects=["site"], user="bob", scope="admin", ttl_seconds=60
    )
    principal = Authenticator(secret=SECRET, leeway=5).verify(token)
    assert principal == Principal("bob", "acme", ("site",), "admin")
    assert principal.expires is not None
    assert 64 <= principal.expires - time.time() <= 66  # exp (whole seconds) + leeway
    assert Authenticator().verify(None).expires is None  # auth off: never
    huge = jwt.encode(
        {"sub": "bob", "tenant": "acme", "projects": "*", "scope": "read", "exp": 10**400},
        SECRET,
        "HS256",
    )
    assert Authenticator(secret=SECRET).verify(huge).expires is None  # no float: never
    at = int(time.time()) + 60
    text = jwt.encode(
        {"sub": "bob", "tenant": "acme", "projects": "*", "scope": "read", "exp": str(at)},
        SECRET,
        "HS256",
    )
    assert Authenticator(secret=SECRET).verify(text).expires == at  # PyJWT takes "123"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": None},
        {"scope": "root"},
        {"ttl_seconds": 0},
        {"algorithm": "HS512"},
        {"algorithm": "RS256"},
    ],
)
def test_issue_token_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "secret": SECRET,
        "tenant": "acme",
        "projects": None,
        "user": "u",
        "scope": "read",
        "ttl_seconds": 60,
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        issue_token(**args)  # type: ignore[arg-type]


# --- require ---------------------------------------------------------------------------


def app_with(auth: Authenticator) -> web.Application:
    app = web.Application()
    app[AUTH] = auth
    return app


async def test_require_reads_query_token_or_bearer_header() -> None:
    app = app_with(Authenticator(secret=SECRET))
    query = make_mocked_request("GET", f"/x?token={hs()}", app=app)
    assert (await require(query, "acme", "site", "write")).user == "ada"
    header = make_mocked_request("GET", "/x", headers={"Authorization": f"Bearer {hs()}"}, app=app)
    assert (await require(header, "acme", "site", "read")).user == "ada"


async def test_require_refuses_other_tenants_and_higher_scopes() -> None:
    app = app_with(Authenticator(secret=SECRET))
    request = make_mocked_request("GET", f"/x?token={hs(scope='read')}", app=app)
    with pytest.raises(PermissionDenied, match="other/site"):
        await require(request, "other", "site", "read")
    with pytest.raises(PermissionDenied, match="does not allow write"):
        await require(request, "acme", "site", "write")
    with pytest.raises(InvalidToken):
        await require(make_mocked_request("GET", "/x", app=app), "acme", "site", "read")
