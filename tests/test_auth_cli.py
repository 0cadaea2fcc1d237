"""Identity and access from the client side: the SDK's credential choice and the real
`modelreg` console script's auth, projects, principals, tokens and roles commands.

The pure-logic tests (duration parsing, which credential wins, token-file reload) need no
server; the rest drive the CLI as a subprocess against a real registry."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from conftest import run_cli
from onnx_helpers import onnx_bytes

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
    assert "cannot connect to the registry" in proc.stderr
    assert "does not speak TLS" in proc.stderr


def test_a_watcher_given_an_address_opens_and_closes_its_own_channel(registry):
    from modelreg.watch import Watcher

    creds = credentials.Credentials(token="mr_sent_but_unchecked_with_auth_off")
    with Watcher(registry.address, credentials=creds) as w:
        first = next(iter(w))
    assert first.WhichOneof("payload") == "snapshot"


async def test_an_async_watcher_given_an_address_opens_and_closes_its_own_channel(registry):
    from modelreg.watch import AsyncWatcher

    creds = credentials.Credentials(token="mr_sent_but_unchecked_with_auth_off")
    async with AsyncWatcher(registry.address, credentials=creds) as aw:
        items = aw.__aiter__()
        first = await anext(items)
        # Closed inside the loop, as the SDK's docs show: a stream abandoned to the loop's
        # shutdown leaves grpc's poller a callback on a closed loop.
        await items.aclose()
    assert first.WhichOneof("payload") == "snapshot"


# ---------------------------------------------------------------------- end to end, auth on


class Cli:
    """The real `modelreg` script against one registry, as a given token (or none). Keeps
    every command's output, to check that no secret leaks outside `tokens create`."""

    def __init__(self, address: str):
        self.address = address
        self.printed: list[tuple[tuple[str, ...], str]] = []

    def __call__(self, *args: str, token: str | None = None, check: bool = True, **env: str):
        proc = run_cli(
            *args,
            address=self.address,
            check=check,
            env={"MODELREG_TOKEN": token or "", "MODELREG_TOKEN_FILE": "", **env},
        )
        self.printed.append((args, proc.stdout + proc.stderr))
        return proc

    def json(self, *args: str, token: str | None = None, check: bool = True) -> dict:
        return json.loads(self(*args, "-o", "json", token=token, check=check).stdout)

    def leaked(self, secrets: list[str]) -> list[tuple[str, ...]]:
        """Commands other than `tokens create` that printed one of `secrets`."""
        return [a for a, text in self.printed if a[:2] != ("tokens", "create") and any(s in text for s in secrets)]


def test_an_admin_sets_up_access_and_the_cli_shows_who_may_do_what(secure_registry, tmp_path):
    cli, admin = Cli(secure_registry.address), secure_registry.admin_token

    me = cli.json("auth", "whoami", token=admin)
    assert me["principal"]["principalId"] == "admin" and me["authEnabled"] is True
    assert [(b["role"], b["project"]) for b in me["bindings"]] == [("admin", "")]
    assert me["token"]["tokenId"] == "admin-bootstrap" and me["authenticatedBy"] == "token"

    # Projects and principals.
    project = cli.json("projects", "create", "vision", "--description", "detectors", token=admin)["project"]
    assert (project["projectId"], project["description"], project["createdBy"]) == ("vision", "detectors", "admin")
    assert {"default", "vision"} <= {p["projectId"] for p in cli.json("projects", "list", token=admin)["projects"]}
    assert "vision" in cli("projects", "list", token=admin).stdout
    assert cli.json("principals", "create", "ana", token=admin)["principal"]["serviceAccount"] is False
    made_ci = cli.json("principals", "create", "trainer-ci", "--service-account", token=admin)
    assert made_ci["principal"]["serviceAccount"] is True
    principals = cli.json("principals", "list", token=admin)["principals"]
    assert {"admin", "ana", "trainer-ci"} <= {p["principalId"] for p in principals}
    assert "service account" in cli("principals", "list", token=admin).stdout

    # Tokens: the secret once, in "token"; an expiry 30 days out.
    made = cli.json("tokens", "create", "ana-1", "--principal", "ana", "--expires", "30d", token=admin)
    ana = made["token"]
    assert ana.startswith("mr_") and made["apiToken"]["tokenId"] == "ana-1"
    assert made["apiToken"]["principal"].removeprefix("principals/") == "ana"
    expires = datetime.fromisoformat(made["apiToken"]["expireTime"].replace("Z", "+00:00"))
    assert abs(expires - datetime.now(UTC) - timedelta(days=30)) < timedelta(minutes=5)
    # Without -o json: the secret alone on stdout, the once-only note on stderr.
    plain = cli("tokens", "create", "ci-1", "--principal", "trainer-ci", token=admin)
    trainer = plain.stdout.strip()
    assert trainer.startswith("mr_") and plain.stdout == trainer + "\n"
    assert "shown only once" in plain.stderr and trainer not in plain.stderr
    trainer_file = tmp_path / "ci.token"
    trainer_file.write_text(plain.stdout)

    # Roles.
    granted = cli.json("roles", "grant", "ana", "viewer", "--project", "vision", token=admin)["binding"]
    assert (granted["principal"], granted["role"], granted["project"]) == ("ana", "viewer", "vision")
    assert (
        "granted trainer to trainer-ci in project vision"
        in cli("roles", "grant", "trainer-ci", "trainer", "--project", "vision", token=admin).stdout
    )
    in_vision = cli.json("roles", "list", "--project", "vision", token=admin)["bindings"]
    assert {(b["principal"], b["role"]) for b in in_vision} == {("ana", "viewer"), ("trainer-ci", "trainer")}
    of_ana = cli.json("roles", "list", "--principal", "ana", token=admin)["bindings"]
    assert [(b["role"], b["project"]) for b in of_ana] == [("viewer", "vision")]

    # whoami as the new principal.
    whoami = cli.json("auth", "whoami", token=ana)
    assert whoami["principal"]["principalId"] == "ana"
    assert [(b["role"], b["project"]) for b in whoami["bindings"]] == [("viewer", "vision")]
    assert whoami["token"]["tokenId"] == "ana-1"
    assert whoami["token"]["expireTime"] == made["apiToken"]["expireTime"]
    human = cli("auth", "whoami", token=ana).stdout
    assert all(word in human for word in ("ana", "ana-1", "viewer", "vision"))

    # The trainer, from its token file (--token-file), creates and registers in vision.
    weights = tmp_path / "m.onnx"
    weights.write_bytes(onnx_bytes(4096))
    created = cli.json("--token-file", str(trainer_file), "models", "create", "detector", "--project", "vision")
    assert created["project"] == "vision" and created["createdBy"] == "trainer-ci"
    cli("register", "detector", str(weights), "--token-file", str(trainer_file))
    cli("register", "counter", str(weights), "--project", "vision", "--token-file", str(trainer_file))
    assert cli.json("models", "get", "counter", token=admin)["project"] == "vision"

    # can-i: yes/no and exit 0/1, in words and in JSON.
    yes = cli("auth", "can-i", "read", "models/detector", token=ana)
    assert (yes.returncode, yes.stdout) == (0, "yes\n")
    no = cli("auth", "can-i", "promote", "models/detector", token=ana, check=False)
    assert (no.returncode, no.stdout) == (1, "no\n")
    no_json = cli.json("auth", "can-i", "promote", "models/detector", token=ana, check=False)
    assert no_json["allowed"] is False and no_json["permission"] == "versions.promote"
    assert no_json["project"] == "vision" and no_json["principal"].removeprefix("principals/") == "ana"
    assert cli("auth", "can-i", "create", "models", "--project", "default", token=ana, check=False).returncode == 1
    assert cli("auth", "can-i", "register", "models/detector", token=trainer).returncode == 0

    # A viewer reads but may not promote; the message names who, what and where.
    assert cli.json("get", "detector", "1", token=ana)["name"] == "models/detector/versions/1"
    denied = cli("promote", "detector", "1", "staging", token=ana, check=False)
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    assert "'ana'" in denied.stderr and "'versions.promote'" in denied.stderr and "'vision'" in denied.stderr
    assert "cannot reach" not in denied.stderr and "set MODELREG_TOKEN" not in denied.stderr

    # Once a releaser, the promotion is recorded under the principal and its token, the
    # forged actor only as "for".
    cli("roles", "grant", "ana", "releaser", "--project", "vision", token=admin)
    cli("promote", "detector", "1", "staging", token=ana, MODELREG_ACTOR="mallory")
    assert "ana (token ana-1, for mallory)" in cli("history", "detector", token=admin).stdout
    assert cli.json("roles", "revoke", "ana", "releaser", "--project", "vision", token=admin) == {"removed": True}
    again = cli.json("roles", "revoke", "ana", "releaser", "--project", "vision", token=admin)
    assert again == {"removed": False}

    # Tokens list: names, owners and states, never a secret.
    listed = cli.json("tokens", "list", token=admin)["tokens"]
    by_name = {t["tokenId"]: t for t in listed}
    assert {"admin-bootstrap", "ana-1", "ci-1"} <= by_name.keys()
    assert all("token" not in t for t in listed)
    table = cli("tokens", "list", "--principal", "ana", token=admin).stdout
    assert "ana-1" in table and "ci-1" not in table and "live" in table

    # A revoked token is UNAUTHENTICATED, with the hint to set another.
    revoked = cli.json("tokens", "revoke", "ana-1", token=admin)["apiToken"]
    assert revoked["tokenId"] == "ana-1" and "revokeTime" in revoked
    refused = cli("auth", "whoami", token=ana, check=False)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr and "revoked" in refused.stderr
    assert "set MODELREG_TOKEN or --token-file" in refused.stderr
    assert "cannot reach" not in refused.stderr
    assert "revokeTime" in {t["tokenId"]: t for t in cli.json("tokens", "list", token=admin)["tokens"]}["ana-1"]
    assert "revoked" in cli("tokens", "list", "--principal", "ana", token=admin).stdout

    # No token at all: the same hint, and a watch stops at once instead of retrying.
    anonymous = cli("models", "list", check=False)
    assert anonymous.returncode == 1
    assert "UNAUTHENTICATED" in anonymous.stderr and "set MODELREG_TOKEN or --token-file" in anonymous.stderr
    watch = cli("watch", "--snapshot-only", check=False)
    assert watch.returncode == 1 and "set MODELREG_TOKEN or --token-file" in watch.stderr
    snapshot = json.loads(cli("watch", "--snapshot-only", "-o", "json", token=trainer).stdout)
    assert {d["name"] for d in snapshot["snapshot"]["deployments"]} == {
        "models/detector/deployment",
        "models/counter/deployment",
    }

    # An empty project can go, with its bindings; `default` and a project with models cannot.
    cli("projects", "create", "scratch", token=admin)
    cli("roles", "grant", "trainer-ci", "viewer", "--project", "scratch", token=admin)
    assert cli.json("projects", "delete", "scratch", token=admin) == {"deletedBindings": "1"}
    assert "scratch" not in {p["projectId"] for p in cli.json("projects", "list", token=admin)["projects"]}
    busy = cli("projects", "delete", "vision", token=admin, check=False)
    assert busy.returncode == 1 and "FAILED_PRECONDITION" in busy.stderr

    assert cli.leaked([admin, ana, trainer]) == []


def test_a_non_admin_cannot_manage_tokens_and_sees_only_its_projects(secure_registry):
    cli, admin = Cli(secure_registry.address), secure_registry.admin_token
    cli("projects", "create", "a", token=admin)
    cli("projects", "create", "b", token=admin)
    cli("principals", "create", "pat", token=admin)
    cli("roles", "grant", "pat", "project-admin", "--project", "a", token=admin)
    pat = cli.json("tokens", "create", "pat-1", "--principal", "pat", token=admin)["token"]

    assert [p["projectId"] for p in cli.json("projects", "list", token=pat)["projects"]] == ["a"]
    denied = cli("tokens", "create", "more", "--principal", "pat", token=pat, check=False)
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr and "'pat'" in denied.stderr
    assert cli("auth", "can-i", "create", "tokens", token=pat, check=False).returncode == 1
    # A project admin grants in its project, not in another and not admin.
    cli("principals", "create", "dev", token=admin)
    cli("roles", "grant", "dev", "viewer", "--project", "a", token=pat)
    assert cli("roles", "grant", "dev", "viewer", "--project", "b", token=pat, check=False).returncode == 1
    assert cli("roles", "grant", "dev", "admin", token=pat, check=False).returncode == 1
    assert cli.leaked([admin, pat]) == []


def test_the_cli_verifies_the_registry_over_tls_with_ca_cert(make_registry, tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file, other_ca = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem", "other.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    reg = make_registry(auth="on", tls_cert=str(cert_file), tls_key=str(key_file))
    admin = (tmp_path / "data" / "admin.token").read_text().strip()
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin)

    ok = run_cli("auth", "whoami", "--ca-cert", str(ca_file), "--token-file", str(token_file), address=reg.address)
    assert "admin" in ok.stdout
    via_env = run_cli(
        "projects",
        "list",
        "-o",
        "json",
        address=reg.address,
        env={"MODELREG_CA_CERT": str(ca_file), "MODELREG_TOKEN": admin},
    )
    assert "default" in {p["projectId"] for p in json.loads(via_env.stdout)["projects"]}

    wrong = run_cli(
        "auth", "whoami", "--ca-cert", str(other_ca), address=reg.address, env={"MODELREG_TOKEN": admin}, check=False
    )
    assert wrong.returncode == 1 and "not signed by the CA given" in wrong.stderr
    plaintext = run_cli("auth", "whoami", address=reg.address, env={"MODELREG_TOKEN": admin}, check=False)
    assert plaintext.returncode == 1 and "cannot connect to the registry" in plaintext.stderr
    assert "--ca-cert" in plaintext.stderr
    for proc in (ok, via_env, wrong, plaintext):
        assert admin not in proc.stdout + proc.stderr


def test_a_client_certificate_authenticates_as_the_principal_it_names(make_registry, tmp_path):
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ana_cert = ca.issue_cert("ana", common_name="ana")
    files = {n: tmp_path / f"{n}.pem" for n in ("cert", "key", "ca", "ana", "ana-key")}
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    ana_cert.cert_chain_pems[0].write_to_path(str(files["ana"]))
    ana_cert.private_key_pem.write_to_path(str(files["ana-key"]))
    reg = make_registry(
        auth="on", tls_cert=str(files["cert"]), tls_key=str(files["key"]), tls_client_ca=str(files["ca"])
    )
    admin = {"MODELREG_TOKEN": (tmp_path / "data" / "admin.token").read_text().strip()}
    as_ana = {"MODELREG_CLIENT_CERT": str(files["ana"]), "MODELREG_CLIENT_KEY": str(files["ana-key"])}

    def cli(*args: str, env: dict, check: bool = True):
        return run_cli(*args, "--ca-cert", str(files["ca"]), address=reg.address, env=env, check=check)

    # The admin connects with a token, and (the server requires one) a client certificate.
    cli("principals", "create", "ana", env={**admin, **as_ana})
    cli("roles", "grant", "ana", "viewer", env={**admin, **as_ana})
    me = json.loads(cli("auth", "whoami", "-o", "json", env=as_ana).stdout)
    assert me["principal"]["principalId"] == "ana" and me["authenticatedBy"] == "certificate"
    assert [(b["role"], b["project"]) for b in me["bindings"]] == [("viewer", "default")]
    assert "token" not in me
    assert cli("auth", "can-i", "read", "models", env=as_ana).stdout == "yes\n"
    # A token but no certificate: the server closes the connection; the hint says what to set.
    without = cli("auth", "whoami", env=admin, check=False)
    assert without.returncode == 1 and "MODELREG_CLIENT_CERT and MODELREG_CLIENT_KEY" in without.stderr
    half = cli("auth", "whoami", env={"MODELREG_CLIENT_CERT": str(files["ana"])}, check=False)
    assert half.returncode == 2 and "MODELREG_CLIENT_KEY" in half.stderr
