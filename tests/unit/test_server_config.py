"""Settings: WEFT_* environment, flags over env, refusing unsafe starts; and the CLI."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from client.cli import main as weft
from server.auth import Authenticator
from server.cli import parse_ttl, serve_main, settings_from
from server.config import QuotaOverride, Settings, is_loopback
from server.main import banner


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEFT_HOST", "WEFT_PORT", "WEFT_STORE", "WEFT_SECRET", "WEFT_PUBLIC_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.store) == ("127.0.0.1", 8765, "sqlite:///./weft-data/weft.db")
    assert not s.auth_enabled


def test_environment_variables_and_flags_over_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEFT_PORT", "9000")
    monkeypatch.setenv("WEFT_STORE", "sqlite:///env.db")
    monkeypatch.setenv("WEFT_TENANT_QUOTAS", '{"acme": {"max_connections": 3}}')
    args = argparse.Namespace(
        host=None,
        port=9100,
        store=None,
        secret=None,
        public_key=None,
        insecure=None,
        log_level=None,
        room_idle_seconds=None,
    )
    s = settings_from(args)
    assert (s.port, s.store) == (9100, "sqlite:///env.db")
    assert s.tenant_quotas["acme"].max_connections == 3


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.1.2.3"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert not Settings(host=host).auth_enabled


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "example.com"])
def test_no_auth_off_loopback_unless_insecure(host: str) -> None:
    with pytest.raises(ValidationError, match="without auth"):
        Settings(host=host)
    assert Settings(host=host, insecure=True).host == host
    assert Settings(host=host, secret="s" * 32).auth_enabled  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["", " "])
def test_an_empty_host_is_a_configuration_error(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It listened on every interface (aiohttp's reading of ""), with auth on."""
    monkeypatch.setenv("WEFT_HOST", host)
    assert serve_main(["--secret", "s" * 32, "--port", "0"]) == 2
    assert "host is empty" in capsys.readouterr().err


def test_python_m_server_refuses_to_start_without_auth_on_a_public_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert serve_main(["--host", "0.0.0.0"]) == 2
    assert "without auth" in capsys.readouterr().err


def test_weft_serve_prints_a_validators_message_without_pydantics_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert serve_main(["--secret", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("weft serve: --secret: secret is empty") and "Value error" not in err


@pytest.mark.parametrize(
    ("argv", "env", "said"),
    [
        (
            ["--port", "99999"],
            {},
            "--port: Input should be less than or equal to 65535 (given: 99999)",
        ),
        ([], {"WEFT_PORT": "abc"}, "WEFT_PORT: Input should be a valid integer"),
        (
            [],
            {"WEFT_COMMIT_MAX_UPDATES": "0"},
            "WEFT_COMMIT_MAX_UPDATES: Input should be greater than 0 (given: '0')",
        ),
        (
            [],
            {"WEFT_TENANT_QUOTAS": '{"acme": {"updates_per_second": -1}}'},
            "WEFT_TENANT_QUOTAS (acme.updates_per_second): Input should be greater than 0",
        ),
        (["--log-level", "LOUD"], {}, "--log-level: unknown log level 'LOUD'\n"),
        ([], {"WEFT_SECRET": "short"}, "WEFT_SECRET: secret is 5 bytes"),
        # settings checked against each other (they said "send_queue_frames must be ...")
        (
            [],
            {"WEFT_SEND_QUEUE_FRAMES": "100"},
            "WEFT_SEND_QUEUE_FRAMES (100) must be at least WEFT_COMMIT_MAX_UPDATES (4000)",
        ),
        (
            [],
            {"WEFT_MAX_UPDATE_BYTES": "99999999"},
            "WEFT_MAX_UPDATE_BYTES (99999999) must not exceed WEFT_MAX_MESSAGE_BYTES",
        ),
    ],
)
def test_a_bad_setting_is_named_as_it_was_given(
    argv: list[str],
    env: dict[str, str],
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The flag when one was given, else the variable, and the value (not a secret's):
    the error named the setting's field ("port: ..."), which a person who set
    WEFT_PORT never wrote."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("server.main.run", lambda _settings: 0)  # taken: it would serve
    assert serve_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"weft serve: {said}"), err
    assert "short" not in err  # a secret is never echoed


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "nan", "1e12", "86401", "-1"])
def test_a_jwt_leeway_must_be_finite_and_at_most_a_day(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``inf`` was taken, and then every expired token was accepted for ever."""
    monkeypatch.setenv("WEFT_JWT_LEEWAY_SECONDS", value)
    monkeypatch.setattr("server.main.run", lambda _settings: 0)  # taken: it would serve
    assert serve_main([]) == 2  # a configuration error, before anything is opened
    err = capsys.readouterr().err
    assert err.startswith(
        "weft serve: WEFT_JWT_LEEWAY_SECONDS: must be a number of seconds from 0 to 86400 (a day)"
    ), err
    assert "Value error" not in err


def test_python_m_server_with_an_infinite_jwt_leeway_exits_2(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/w.db"
    command = [sys.executable, "-m", "server", "--port", "0", "--store", store]
    env = {**os.environ, "WEFT_JWT_LEEWAY_SECONDS": "inf"}
    try:  # taken, it serves until stopped
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("python -m server took WEFT_JWT_LEEWAY_SECONDS=inf and served")
    code, err = done.returncode, done.stderr
    assert code == 2, err
    assert "WEFT_JWT_LEEWAY_SECONDS: must be a number of seconds from 0 to 86400" in err
    assert "Traceback" not in err and not (tmp_path / "w.db").exists()


@pytest.mark.parametrize("value", ["0", "2.5", "86400"])
def test_a_jwt_leeway_of_up_to_a_day_is_taken(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEFT_JWT_LEEWAY_SECONDS", value)
    assert Settings().jwt_leeway_seconds == float(value)


def test_public_key_may_be_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    (tmp_path / "pub.pem").write_text(pem)
    assert Settings(public_key=str(tmp_path / "pub.pem")).public_key == pem
    with pytest.raises(ValidationError):
        Settings(public_key=str(tmp_path / "missing.pem"))
    # An OpenSSH key line is key text; a file named like one is still a file.
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert Settings(public_key=line.decode()).public_key == line.decode()
    monkeypatch.chdir(tmp_path)  # (file names relative to the working directory)
    (tmp_path / "ssh-jwt.pub").write_text(pem)
    assert Settings(public_key="ssh-jwt.pub").public_key == pem
    (tmp_path / "ssh-named.pub").write_bytes(line + b" ada@host\n")
    assert str(Settings(public_key="ssh-named.pub").public_key).startswith("ecdsa-sha2-nistp256 ")


def test_send_queues_must_hold_a_commit_batch() -> None:
    with pytest.raises(ValidationError, match="send_queue_frames"):
        Settings(send_queue_frames=10, commit_max_updates=100)


def test_banner_says_where_what_store_and_whether_auth_is_on() -> None:
    off = "\n".join(banner(Settings(), [("127.0.0.1", 8765)]))
    assert "http://127.0.0.1:8765" in off and "sqlite:///" in off and "auth: OFF" in off
    on = "\n".join(banner(Settings(secret="x" * 32), [("::1", 1)]))  # type: ignore[arg-type]
    assert "http://[::1]:1" in on and "auth: on (HS256" in on


def test_the_event_loop_is_uvloop_when_installed_else_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``auto`` (the default) becomes the loop that runs; asking for uvloop where it is
    not installed is a configuration error naming the setting."""
    assert Settings().event_loop == "uvloop"  # a dependency: installed here
    assert "event loop: uvloop" in banner(Settings(), [("127.0.0.1", 1)])
    monkeypatch.setenv("WEFT_EVENT_LOOP", "asyncio")
    assert Settings().event_loop == "asyncio"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    monkeypatch.setenv("WEFT_EVENT_LOOP", "auto")
    assert Settings().event_loop == "asyncio"
    monkeypatch.setenv("WEFT_EVENT_LOOP", "uvloop")
    with pytest.raises(ValidationError, match="uvloop is not installed"):
        Settings()


def test_weft_serve_runs_on_the_event_loop_it_names(tmp_path: Path) -> None:
    """A real ``weft serve`` on each loop: its banner names the loop, and it serves."""
    for loop in ("asyncio", "uvloop"):
        env = {**os.environ, "WEFT_EVENT_LOOP": loop, "PYTHONUNBUFFERED": "1"}
        store = f"sqlite:///{tmp_path / loop}.db"
        command = [sys.executable, "-m", "server", "--port", "0", "--store", store]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            said = [proc.stdout.readline() for _ in range(3)]
            port = int(re.findall(r":(\d+) ", said[0])[0])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                assert conn.recv(100).startswith(b"HTTP/1.0 200 OK")
        finally:
            proc.terminate()
            code = proc.wait(20)
            assert proc.stdout is not None
            proc.stdout.close()
        assert code == 0
        assert f"event loop: {loop}\n" in said


# --- weft token create -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("7d", 604800)]
)
def test_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1y", "-5m", "h", "00", "\u0663", "367d"])
def test_bad_ttl(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_token_create_prints_a_verifiable_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEFT_SECRET", "cli-secret-0123456789abcdefghijkl")
    argv = ["token", "create", "--tenant", "acme", "--project", "site", "--project", "blog"]
    assert weft([*argv, "--user", "ada", "--scope", "read", "--ttl", "10m"]) == 0
    token = capsys.readouterr().out.strip()
    p = Authenticator(secret="cli-secret-0123456789abcdefghijkl").verify(token)
    assert (p.user, p.tenant, p.projects, p.scope) == ("ada", "acme", ("site", "blog"), "read")


def test_token_create_with_a_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert (
        weft(["token", "create", "--tenant", "acme", "--private-key", str(tmp_path / "key.pem")])
        == 0
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert Authenticator(public_key=public).verify(capsys.readouterr().out.strip()).tenant == "acme"


@pytest.mark.parametrize(
    "value",
    [
        '{"kty": "oct", "k": "c2VjcmV0LWJ5dGVz"}',  # a JWK: an HMAC key
        "0123456789abcdef0123456789abcdef",  # an HS256 secret, in the wrong variable
        "MIIEvQIBADANBgkqhkiG9w0B/secret+base64",  # key bytes without their PEM lines
    ],
)
def test_a_public_key_that_is_no_key_or_file_is_not_echoed(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It may be a secret given in the wrong place: the message said it in full."""
    monkeypatch.setenv("WEFT_PUBLIC_KEY", value)
    assert serve_main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "weft serve: WEFT_PUBLIC_KEY: public_key is neither PEM or OpenSSH key text nor a "
        f"readable file ({len(value)} characters, not shown: it may be a secret)\n"
    )


def test_a_public_key_file_that_is_missing_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "jwt" / "public.pem"
    missing.parent.mkdir()
    assert serve_main(["--port", "0", "--public-key", str(missing)]) == 2
    assert capsys.readouterr().err == (
        "weft serve: --public-key: public_key is neither PEM or OpenSSH key text nor a "
        f"readable file: {missing}\n"
    )


def test_token_create_secret_flag_beats_a_private_key_in_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key.pem").write_bytes(private_pem(EC_KEY))
    monkeypatch.setenv("WEFT_PRIVATE_KEY", str(tmp_path / "key.pem"))
    secret = "cli-secret-0123456789abcdefghijkl"
    assert weft(["token", "create", "--tenant", "acme", "--secret", secret]) == 0
    assert Authenticator(secret=secret).verify(capsys.readouterr().out.strip()).tenant == "acme"
    assert weft(["token", "create", "--tenant", "acme"]) == 0  # no flag: the variable's key
    assert jwt.get_unverified_header(capsys.readouterr().out.strip())["alg"] == "ES256"


def private_pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


RSA_KEY = rsa.generate_private_key(65537, 2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
UNUSABLE_PRIVATE_KEYS = {
    "Ed25519": (
        private_pem(ed25519.Ed25519PrivateKey.generate()),
        [],
        "it is an Ed25519 key; weft takes RSA keys (RS256) and EC keys on curve P-256",
    ),
    "EC P-384": (
        private_pem(ec.generate_private_key(ec.SECP384R1())),
        [],
        "it is an EC key on curve secp384r1, and ES256 needs curve P-256",
    ),
    "a public key": (public_pem(RSA_KEY), [], "it is a public key: tokens are signed with"),
    "not PEM": (b"garbage\n", [], "not a PEM private key"),
    "RSA for ES256": (
        private_pem(RSA_KEY),
        ["--algorithm", "ES256"],
        "it is an RSA key, and ES256 needs an EC key on curve P-256 (this key signs RS256)",
    ),
    "EC for RS256": (
        private_pem(EC_KEY),
        ["--algorithm", "RS256"],
        "and RS256 needs an RSA key (this key signs ES256)",
    ),
}


@pytest.mark.parametrize("case", list(UNUSABLE_PRIVATE_KEYS))
def test_token_create_says_what_is_wrong_with_a_private_key(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PyJWT's tracebacks (exit 1) were all it said: an Ed25519 or EC P-384 key, a public
    key, a file that is not PEM, an RSA key with --algorithm ES256."""
    pem, flags, message = UNUSABLE_PRIVATE_KEYS[case]
    key = tmp_path / "key.pem"
    key.write_bytes(pem)
    assert weft(["token", "create", "--tenant", "acme", "--private-key", str(key), *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"weft token create: --private-key {key}: "), captured.err
    assert message in captured.err, captured.err


@pytest.mark.parametrize(
    ("key", "algorithm"), [(RSA_KEY, "RS256"), (EC_KEY, "ES256"), (EC_KEY, None)]
)
def test_token_create_signs_with_a_usable_key(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    algorithm: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "key.pem").write_bytes(private_pem(key))
    flags = ["--algorithm", algorithm] if algorithm else []
    argv = ["token", "create", "--tenant", "acme", "--private-key", str(tmp_path / "key.pem")]
    assert weft([*argv, *flags]) == 0
    token = capsys.readouterr().out.strip()
    assert Authenticator(public_key=public_pem(key).decode()).verify(token).tenant == "acme"


@pytest.mark.parametrize("ttl", ["9999999d", "99999999999999999999w", "367d", "53w", "9" * 5000])
def test_token_create_refuses_a_ttl_over_366_days(
    ttl: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ttl 9999999d was an OverflowError traceback, 99999999999999999999w another."""
    monkeypatch.setenv("WEFT_SECRET", "cli-secret-0123456789abcdefghijkl")
    assert weft(["token", "create", "--tenant", "acme", "--ttl", ttl]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "is too long: at most 366 days" in captured.err, captured.err
    assert weft(["token", "create", "--tenant", "acme", "--ttl", "366d"]) == 0


def test_token_create_without_a_secret_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert weft(["token", "create", "--tenant", "acme"]) == 2
    assert "WEFT_SECRET" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["--tenant", ""], "tenant name must be 1 to 64 characters"),
        (["--tenant", "a/b"], "tenant name 'a/b' may only use letters, digits, '.', '_' and '-'"),
        (["--tenant", "*"], "tenant name '*' may only use"),
        (
            ["--tenant", "acme", "--project", "site", "--project", "my site"],
            "project name 'my site'",
        ),
        # only allowed characters, but no name: it said they "may only use" those
        (["--tenant", "acme", "--project", ".."], "project name '..' may not be '.' or '..'"),
        (["--tenant", "."], "tenant name '.' may not be '.' or '..'"),
    ],
)
def test_token_create_refuses_names_the_server_would_refuse(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    names: list[str],
    message: str,
) -> None:
    """It printed a token for tenant '' or 'a/b', which no request can use."""
    monkeypatch.setenv("WEFT_SECRET", "cli-secret-0123456789abcdefghijkl")
    assert weft(["token", "create", *names]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"weft token create: {message}")


@pytest.mark.parametrize("secret", ["", "   "])
def test_an_empty_secret_is_refused_not_taken_for_auth_off(secret: str) -> None:
    """WEFT_SECRET= (an unset shell variable) used to pass the "auth or loopback" check
    as a secret, then leave every caller unauthenticated on any address."""
    with pytest.raises(ValidationError, match="secret is empty"):
        Settings(host="0.0.0.0", secret=secret)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="secret is empty"):
        Settings(secret=secret)  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", ["short", "x" * 31, "\u00e9" * 15])
def test_a_short_secret_is_refused_by_the_server_and_by_token_create(
    secret: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HS256 secret under 32 bytes was taken silently (`weft serve --secret short`),
    and `weft token create` printed PyJWT's InsecureKeyLengthWarning, a site-packages
    path in it. The length is in bytes (15 x "é" is 30)."""
    size = len(secret.encode())
    with pytest.raises(ValidationError, match=f"secret is {size} bytes: HS256 needs at least 32"):
        Settings(secret=secret)  # type: ignore[arg-type]
    monkeypatch.setenv("WEFT_SECRET", secret)
    assert weft(["token", "create", "--tenant", "acme"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(
        f"weft token create: secret is {size} bytes: HS256 needs at least 32"
    ), captured.err
    assert "Warning" not in captured.err
    Settings(secret="y" * 32)  # type: ignore[arg-type]  # 32 bytes is enough


def test_a_tenants_update_size_override_is_held_to_the_store_limit() -> None:
    with pytest.raises(
        ValidationError,
        match=r"WEFT_TENANT_QUOTAS: tenant acme: max_update_bytes \(\d+\) must not exceed",
    ):
        Settings(tenant_quotas={"acme": {"max_update_bytes": 12 << 20}})  # type: ignore[dict-item]
    settings = Settings(tenant_quotas={"acme": {"max_update_bytes": 1 << 20}})  # type: ignore[dict-item]
    assert settings.tenant_quotas["acme"].max_update_bytes == 1 << 20


def test_a_misspelt_tenant_quota_is_an_error_not_ignored() -> None:
    with pytest.raises(ValidationError, match="max_conections"):
        Settings(tenant_quotas={"acme": {"max_conections": 5}})  # type: ignore[dict-item]


def serve_in_a_child(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``python -m server ARGV`` in a fresh process (it configures logging, runs a loop):
    its exit code and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "server", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    return done.returncode, done.stderr


def test_tenant_quotas_that_are_not_json_are_named_without_a_traceback() -> None:
    code, err = serve_in_a_child("--port", "0", env={"WEFT_TENANT_QUOTAS": "{bad"})
    assert code == 2
    assert "WEFT_TENANT_QUOTAS is not valid JSON" in err and "Traceback" not in err


def test_a_store_that_cannot_be_opened_is_not_blamed_on_the_address(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    code, err = serve_in_a_child("--port", "0", "--store", f"sqlite:///{tmp_path}/a-file/w.db")
    assert code == 1
    assert "cannot open" in err and "a-file" in err and "cannot listen" not in err


def test_an_address_in_use_is_said_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = serve_in_a_child("--port", str(port), "--store", f"sqlite:///{tmp_path}/w.db")
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "draining" not in err and "drained" not in err  # it never listened
    assert not (tmp_path / "w.db").exists()  # no store made (it was, empty)


@pytest.mark.parametrize("flag", [False, True])
def test_token_create_with_an_empty_secret_says_it_is_empty(
    flag: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`WEFT_SECRET= weft token create` said "HS256 needs a secret / set --secret or
    WEFT_SECRET" (it is set), while `weft serve` says the secret is empty."""
    monkeypatch.setenv("WEFT_SECRET", "cli-secret-0123456789abcdefghijkl")
    if flag:
        argv = ["token", "create", "--tenant", "acme", "--secret", ""]
    else:
        monkeypatch.setenv("WEFT_SECRET", "")
        argv = ["token", "create", "--tenant", "acme"]
    assert weft(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("weft token create: secret is empty"), captured.err
    assert "needs a secret" not in captured.err and "set --secret" not in captured.err
    assert serve_in_a_child("--port", "0", env={"WEFT_SECRET": ""}) == (
        2,
        "weft serve: WEFT_SECRET: secret is empty: set a real one, or leave WEFT_SECRET unset\n",
    )


def _libfdb_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("fdb_c") is not None


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("sqlite:///{tmp}/w.db?synchronous=BOGUS", "synchronous must be one of"),
        ("sqlite:///{tmp}/w.db?foo=1", "unknown sqlite store option(s): foo"),
        ("postgres://x", "unknown store URL 'postgres://x'"),
        ("sqlite://", "names no file"),
        pytest.param(
            "fdb://",
            "cannot load the FoundationDB client library",
            marks=pytest.mark.skipif(_libfdb_present(), reason="libfdb_c is installed here"),
        ),
    ],
)
def test_a_bad_store_url_is_a_configuration_error(tmp_path: Path, store: str, message: str) -> None:
    """A store URL `weft serve` cannot use (a bad option, an unknown scheme, an engine
    this machine lacks) is a configuration error, exit 2 as a bad quota or secret: it
    was exit 1, a runtime failure's."""
    code, err = serve_in_a_child("--port", "0", "--store", store.format(tmp=tmp_path))
    assert code == 2, err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "w.db").exists()


def test_a_store_path_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    """SQLite opens no file whose path is not UTF-8: it created the file, then failed
    reading its own name back (\"Could not decode to UTF-8 column 'file'\"). Refused
    before anything is created."""
    code, err = serve_in_a_child("--port", "0", "--store", f"sqlite:///{tmp_path}/w\udcff.db")
    assert code == 2, err
    assert "is not valid UTF-8: SQLite cannot open it" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    [
        "HEARTBEAT_SECONDS",
        "ROOM_IDLE_SECONDS",
        "DRAIN_SECONDS",
        "RATE_MAX_WAIT_SECONDS",
        "UPDATES_PER_SECOND",
    ],
)
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_duration_or_rate_setting_must_be_finite(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``inf`` or ``nan`` was taken for these as for the leeway: a configuration error."""
    monkeypatch.setenv(f"WEFT_{name}", value)
    monkeypatch.setattr("server.main.run", lambda _settings: 0)  # taken: it would serve
    assert serve_main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"weft serve: WEFT_{name}: Input should be a finite number"), err


def test_a_tenant_quota_rate_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        QuotaOverride(updates_per_second=float("inf"))


UNUSABLE_PUBLIC_KEYS = {
    "not PEM": (b"garbage\n", "not a PEM public key"),
    "Ed25519": (
        public_pem(ed25519.Ed25519PrivateKey.generate()),
        "the public key cannot verify tokens: it is an Ed25519 key",
    ),
    "EC P-384": (
        public_pem(ec.generate_private_key(ec.SECP384R1())),
        "it is an EC key on curve secp384r1, and ES256 needs curve P-256",
    ),
    "a private key": (private_pem(EC_KEY), "it is a private key: give the server the public key"),
}


@pytest.mark.parametrize("case", list(UNUSABLE_PUBLIC_KEYS))
def test_serve_refuses_a_public_key_it_cannot_verify_tokens_with(case: str, tmp_path: Path) -> None:
    """`weft serve --public-key FILE` started ("auth: on") with a file that is not PEM
    (then every request with a token was a 500) or an Ed25519 key (every one a 401 with
    PyJWT's "<generator object ...>")."""
    pem, message = UNUSABLE_PUBLIC_KEYS[case]
    key = tmp_path / "key.pem"
    key.write_bytes(pem)
    store = f"sqlite:///{tmp_path}/w.db"
    code, err = serve_in_a_child("--port", "0", "--store", store, "--public-key", str(key))
    assert code == 2, err
    assert err.startswith(f"weft serve: --public-key: {key}: "), err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "w.db").exists()


@pytest.mark.parametrize("user", ["", "  "])
def test_token_create_refuses_an_empty_user(
    user: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--user ''` silently signed a token for the login name instead."""
    monkeypatch.setenv("WEFT_SECRET", "cli-secret-0123456789abcdefghijkl")
    assert weft(["token", "create", "--tenant", "acme", "--user", user]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("weft token create: --user is empty"), captured.err


def test_an_instance_name_given_is_a_label_with_a_random_part() -> None:
    """Instances on one store need names of their own (see test_server_cluster)."""
    one, two = Settings(instance="web"), Settings(instance="web")
    assert one.instance.startswith("web-") and two.instance.startswith("web-")
    assert one.instance != two.instance
    assert Settings().instance != Settings().instance
    assert re.fullmatch("[0-9a-f]{8}", Settings().instance)  # none given: random alone


@pytest.mark.parametrize("name", ["a/b", "web 1", "x" * 33])
def test_an_instance_name_that_could_not_label_one_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="instance must be"):
        Settings(instance=name)
