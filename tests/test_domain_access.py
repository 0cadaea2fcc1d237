"""The role table and the no-escalation rule, as pure logic."""

from __future__ import annotations

import pytest

from registry_server.domain.access import ROLES, Binding, Caller, Grants, Permission, anonymous
from registry_server.errors import PermissionDenied

P = Permission


def grants(*bindings: tuple[str, str]) -> Grants:
    return Grants.of(Binding("p", role, project) for role, project in bindings)


def test_the_role_table_is_the_issues():
    view = {P.READ, P.DOWNLOAD, P.WATCH}
    assert ROLES["viewer"] == view
    assert ROLES["trainer"] == view | {P.CREATE_MODEL, P.REGISTER, P.UPDATE_MODEL, P.UPDATE_VERSION, P.SET_ALIAS}
    assert ROLES["agent"] == {P.WATCH, P.READ, P.DOWNLOAD, P.REPORT}
    # Governance (issue 12): releasers approve promotions and cards; both move unprotected aliases.
    # Webhooks (issue 15): releasers read them; project-admins (every project permission) manage them.
    release = {P.PROMOTE, P.CANARY, P.ROLLBACK, P.SET_POLICY, P.APPROVE, P.SET_ALIAS, P.READ_WEBHOOKS}
    assert ROLES["releaser"] == view | release
    assert P.DELETE_MODEL in ROLES["project-admin"] and P.GRANT in ROLES["project-admin"]
    assert not ROLES["project-admin"] & {P.MANAGE_PROJECTS, P.MANAGE_PRINCIPALS, P.MANAGE_TOKENS}
    assert ROLES["admin"] == set(Permission)


def test_bindings_add_up_per_project_and_admin_is_global():
    g = grants(("viewer", "a"), ("releaser", "a"), ("trainer", "b"))
    assert g.allows(P.PROMOTE, "a") and not g.allows(P.PROMOTE, "b")
    assert g.allows(P.REGISTER, "b") and not g.allows(P.REGISTER, "a")
    assert not g.allows(P.READ, "c")
    assert g.readable_projects() == {"a", "b"}
    admin = grants(("admin", ""))
    assert admin.allows(P.MANAGE_TOKENS, "") and admin.allows(P.DELETE_MODEL, "anything")
    assert admin.readable_projects() is None


def test_a_principal_grants_only_what_it_holds():
    pa = grants(("project-admin", "a"))
    assert all(pa.may_grant(role, "a") for role in ("viewer", "trainer", "agent", "releaser", "project-admin"))
    assert not pa.may_grant("viewer", "b")
    assert not pa.may_grant("admin", "")
    # roles.grant alone is not enough: a role with a permission the granter lacks is refused.
    partial = Grants.of([Binding("p", "viewer", "a")])
    assert not partial.may_grant("viewer", "a")
    assert grants(("admin", "")).may_grant("admin", "")


def test_denials_name_the_principal_the_permission_and_the_project():
    caller = Caller("ann", grants(("viewer", "vision")), authenticated=True)
    caller.require(P.READ, "vision")
    with pytest.raises(PermissionDenied) as e:
        caller.require(P.PROMOTE, "vision")
    assert "'ann'" in e.value.message and "'versions.promote'" in e.value.message and "'vision'" in e.value.message
    with pytest.raises(PermissionDenied) as e:
        caller.require(P.MANAGE_TOKENS, "")
    assert "admin" in e.value.message


def test_with_auth_off_the_caller_may_do_everything_under_the_name_it_gives():
    caller = anonymous("alice")
    assert caller.name == "alice" and caller.allows(P.MANAGE_TOKENS, "") and caller.allows(P.DELETE_MODEL, "x")
    assert anonymous("").name == "anonymous"
