"""Identity and access from the client side: the SDK's credential choice and the real
`modelreg` console script's auth, projects, principals, tokens and roles commands.

The pure-logic tests (duration parsing, which credential wins, token-file reload) need no
server; the rest drive the CLI as a subprocess against a real registry."""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import timedelta

import pytest
from conftest import run_cli

from modelreg import Client, credentials
from modelreg.cli import UsageError, connect, execute
from modelreg.cli.access_cmds import parse_duration

# ---------------------------------------------------------------------- pure logic


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("3600s", timedelta(seconds=3600)),
        ("3600", timedelta(seconds=3600)),  # a bare number is seconds
        (" 2H ", timedelta(hours=2)),  # case and surrounding blanks do not matter
    ],
)
def test_expires_accepts_days_hours_minutes_seconds(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("3w", "is not a duration"),  # weeks are not a unit: say 21d
        ("1.5h", "is not a duration"),
        ("-5m", "is not a duration"),
        ("", "is not a duration"),
        ("30 d", "is not a duration"),
        ("0", "more than zero"),
        ("0d", "more than zero"),
        ("99999999d", "10000 years"),
    ],
)
def test_expires_rejects_what_it_cannot_read_with_a_usage_message(text, says):
    with pytest.raises(UsageError, match=says) as e:
        parse_duration(text)
    assert "30d" in str(e.value) or "--expires out" in str(e.value)


CREDENTIAL_VARIABLES = (
    "MODELREG_TOKEN",
    "MODELREG_TOKEN_FILE",
    "MODELREG_CA_CERT",
    "MODELREG_CLIENT_CERT",
    "MODELREG_CLIENT_KEY",
)


def _args(**kw) -> argparse.Namespace:
    base = dict(address="127.0.0.1:1", token_file=None, ca_cert=None, output="table", command="auth")
    base.update(kw)
    return argparse.Namespace(**base)


def test_command_line_files_win_over_the_environment(monkeypatch, tmp_path):
    import trustme

    env_file, flag_file = tmp_path / "env.token", tmp_path / "flag.token"
    env_file.write_text("mr_from_env_file\n")
    flag_file.write_text("mr_from_flag\n")
    for name in ("env-ca.pem", "flag-ca.pem"):
        trustme.CA().cert_pem.write_to_path(str(tmp_path / name))
    monkeypatch.setenv("MODELREG_TOKEN", "mr_from_env")
    monkeypatch.setenv("MODELREG_TOKEN_FILE", str(env_file))
    monkeypatch.setenv("MODELREG_CA_CERT", str(tmp_path / "env-ca.pem"))
    monkeypatch.delenv("MODELREG_CLIENT_CERT", raising=False)
    monkeypatch.delenv("MODELREG_CLIENT_KEY", raising=False)

    with connect(_args(token_file=str(flag_file), ca_cert=str(tmp_path / "flag-ca.pem"))) as c:
        assert c.credentials is not None
        assert c.credentials.current_token() == "mr_from_flag"
        assert c.credentials.ca_cert == tmp_path / "flag-ca.pem"
        assert c.credentials.tls

    # Without flags: the environment's file wins over its token.
    creds = credentials.Credentials.from_env()
    assert creds.current_token() == "mr_from_env_file"
    monkeypatch.delenv("MODELREG_TOKEN_FILE")
    assert credentials.Credentials.from_env().current_token() == "mr_from_env"
    # SDK keyword arguments win over the environment, too.
    monkeypatch.delenv("MODELREG_CA_CERT")
    with Client("127.0.0.1:1", token="mr_from_kwarg") as c:
        assert c.credentials is not None
        assert c.credentials.current_token() == "mr_from_kwarg"
        assert not c.credentials.tls


def test_no_credentials_means_plaintext_without_a_token(monkeypatch):
    for var in (
        "MODELREG_TOKEN",
        "MODELREG_TOKEN_FILE",
        "MODELREG_CA_CERT",
        "MODELREG_CLIENT_CERT",
        "MODELREG_CLIENT_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    with connect(_args()) as c:
        assert c.credentials is not None
        assert c.credentials.current_token() is None
        assert not c.credentials.tls


def test_a_client_certificate_without_its_key_is_refused_before_any_call(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELREG_CLIENT_CERT", str(tmp_path / "client.pem"))
    monkeypatch.delenv("MODELREG_CLIENT_KEY", raising=False)
    with pytest.raises(credentials.ConfigError, match="MODELREG_CLIENT_KEY"):
        Client("127.0.0.1:1")


def test_a_rotated_token_file_is_read_again(monkeypatch, tmp_path):
    monkeypatch.setattr(credentials, "TOKEN_RECHECK_S", 0.0)
    path = tmp_path / "token"
    path.write_text("mr_first\n")
    with Client("127.0.0.1:1", token_file=path) as c:
        assert c.credentials is not None
        assert c.credentials.current_token() == "mr_first"
        path.write_text("mr_second\n")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert c.credentials.current_token() == "mr_second"
        # A rotation that removes the file for a moment keeps the last good token.
        path.unlink()
        assert c.credentials.current_token() == "mr_second"


def test_credentials_never_show_the_token():
    creds = credentials.Credentials(token="mr_secret_value")
    assert "mr_secret_value" not in repr(creds)
    assert "mr_secret_value" not in str(creds)


def test_a_missing_token_file_is_a_usage_error_naming_the_flag(tmp_path, capsys):
    # A call needs the token, so reading the file fails before anything is sent.
    from modelreg.cli.access_cmds import whoami

    code = execute(_args(token_file=str(tmp_path / "absent"), func=whoami))
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot read the token file" in err and "--token-file" in err


def test_a_bad_expires_is_a_usage_error_before_any_call():
    # Nothing listens on port 1: the command must fail on --expires first, with exit 2.
    proc = run_cli("tokens", "create", "ci", "--principal", "ci", "--expires", "3w", address="127.0.0.1:1", check=False)
    assert proc.returncode == 2
    assert "--expires '3w' is not a duration" in proc.stderr


# ---------------------------------------------------------------------- against a registry


def test_ca_cert_against_a_plaintext_registry_says_it_does_not_speak_tls(registry, tmp_path):
    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proc = run_cli("models", "list", "--ca-cert", str(ca_file), address=registry.address, check=False)
    assert proc.returncode == 1
    assert "cannot reach the registry" in proc.stderr
    assert "does not speak TLS" in proc.stderr


def test_watchers_given_an_address_open_and_close_their_own_channel(registry):
    from modelreg.watch import AsyncWatcher, Watcher

    creds = credentials.Credentials(token="mr_sent_but_unchecked_with_auth_off")
    with Watcher(registry.address, credentials=creds) as w:
        first = next(iter(w))
    assert first.WhichOneof("payload") == "snapshot"

    async def first_async():
        async with AsyncWatcher(registry.address, credentials=creds) as aw:
            async for item in aw:
                return item

    assert asyncio.run(first_async()).WhichOneof("payload") == "snapshot"
