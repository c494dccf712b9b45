"""The Keystone fixture itself: logins, the request log, expiry, policy overrides, app credentials."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime

import requests

from tests.servers.keystone import KeystoneServer


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _login(server: KeystoneServer, auth: dict) -> requests.Response:
    # A client's call (no fixture header), with the test CA as the only trust anchor.
    with requests.Session() as http:
        http.trust_env = False
        return http.post(
            server.url + "/auth/tokens?nocatalog", json={"auth": auth}, verify=str(server.ca_cert), timeout=30
        )


def _password_auth(user: str, password: str, project: str) -> dict:
    return {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
        },
        "scope": {"project": {"name": project, "domain": {"id": "default"}}},
    }


def _new_member(server: KeystoneServer) -> tuple[str, str, str, str]:
    """(user name, user id, password, project name) of a fresh member of a fresh project."""
    project = _unique("proj")
    project_id = server.create_project(project)
    user, password = _unique("user"), _unique("pw")
    user_id = server.create_user(user, password, projects=[project_id])
    return user, user_id, password, project


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _wait_until(moment: float) -> None:
    # Poll the clock rather than sleep a guessed amount: returns just after `moment`.
    while (remaining := moment - time.time()) > 0:
        time.sleep(min(remaining, 0.25))


def test_password_login_is_served_and_logged(keystone: KeystoneServer) -> None:
    user, user_id, password, project = _new_member(keystone)
    keystone.clear_requests()

    reply = _login(keystone, _password_auth(user, password, project))

    assert reply.status_code == 201, reply.text
    token = reply.headers["X-Subject-Token"]
    body = reply.json()["token"]
    assert body["user"]["id"] == user_id
    assert body["project"]["name"] == project
    assert "member" in {role["name"] for role in body["roles"]}
    assert keystone.validate_token(token)
    # The fixture's own admin calls (validate_token above) are not counted.
    [entry] = keystone.requests()
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/v3/auth/tokens", 201)
    assert entry["query"] == "nocatalog"
    assert entry["auth_methods"] == ["password"] and entry["auth_scoped"]
    assert keystone.count_requests("POST", "/v3/auth/tokens") == 1
    assert any(e["path"] == "/v3/auth/tokens" and e["method"] == "GET" for e in keystone.requests(include_fixture=True))
    keystone.clear_requests()
    assert keystone.requests() == []


def test_wrong_password_is_401(keystone: KeystoneServer) -> None:
    user, _, _, project = _new_member(keystone)
    assert _login(keystone, _password_auth(user, "not-the-password", project)).status_code == 401


def test_short_lived_token_expires(keystone_factory) -> None:
    server = keystone_factory(expiration=6)
    user, _, password, project = _new_member(server)

    reply = _login(server, _password_auth(user, password, project))
    assert reply.status_code == 201, reply.text
    token, expires_at = reply.headers["X-Subject-Token"], _parse(reply.json()["token"]["expires_at"])
    assert expires_at - time.time() < 10
    assert server.validate_token(token)

    _wait_until(expires_at + 0.1)
    assert not server.validate_token(token)


def test_policy_override_forbids_application_credentials(keystone_factory) -> None:
    server = keystone_factory(policy={"identity:create_application_credential": "!"})
    user, user_id, password, project = _new_member(server)
    token = _login(server, _password_auth(user, password, project)).headers["X-Subject-Token"]

    reply = requests.post(
        f"{server.url}/users/{user_id}/application_credentials",
        json={"application_credential": {"name": "kubectl", "unrestricted": False}},
        headers={"X-Auth-Token": token},
        verify=str(server.ca_cert),
        timeout=30,
    )

    assert reply.status_code == 403, reply.text
    assert server.list_application_credentials(user_id) == []


def test_application_credential_logs_in(keystone: KeystoneServer) -> None:
    user, user_id, password, project = _new_member(keystone)
    token = _login(keystone, _password_auth(user, password, project)).headers["X-Subject-Token"]
    created = requests.post(
        f"{keystone.url}/users/{user_id}/application_credentials",
        json={"application_credential": {"name": "kubectl", "unrestricted": False, "description": "fixture test"}},
        headers={"X-Auth-Token": token},
        verify=str(keystone.ca_cert),
        timeout=30,
    )
    assert created.status_code == 201, created.text
    credential = created.json()["application_credential"]
    assert [c["id"] for c in keystone.list_application_credentials(user_id)] == [credential["id"]]
    keystone.clear_requests()

    reply = _login(
        keystone,
        {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": credential["id"], "secret": credential["secret"]},
            }
        },
    )

    assert reply.status_code == 201, reply.text
    body = reply.json()["token"]
    assert body["project"]["name"] == project  # the credential's project, implicitly
    assert body["user"]["id"] == user_id
    [login] = keystone.logins()
    assert login["auth_methods"] == ["application_credential"] and not login["auth_scoped"]


def test_stop_leaves_nothing_running(keystone_factory) -> None:
    server = keystone_factory()
    process, port = server._process, server.port
    assert process is not None and server.running

    server.stop()

    assert process.poll() is not None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    server.stop()  # idempotent
