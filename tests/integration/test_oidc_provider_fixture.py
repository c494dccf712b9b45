"""The real test OpenID provider and the browser stand-in, driven with plain HTTP.

These pin down how the provider the kubectl-iam tests log in against actually behaves
(error codes, refresh-token rotation, lifetimes), so that tests built on it rest on facts.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers.browser_standin import (
    BrowserStandinError,
    approve_device_code,
    deny_device_code,
)
from tests.servers.oidc_provider import DEVICE_CODE_GRANT, OIDCProvider


REPO = Path(__file__).resolve().parents[2]
SCOPE = "openid profile email offline_access"


# -- helpers ---------------------------------------------------------------------------------------
def device_authorize(op: OIDCProvider, scope: str = SCOPE, **extra: str) -> dict[str, Any]:
    resp = requests.post(
        op.device_authorization_endpoint,
        data={"client_id": op.client_id, "scope": scope, **extra},
        verify=op.ca_cert,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def poll(op: OIDCProvider, device_code: str) -> requests.Response:
    return requests.post(
        op.token_endpoint,
        data={"client_id": op.client_id, "grant_type": DEVICE_CODE_GRANT, "device_code": device_code},
        verify=op.ca_cert,
        timeout=10,
    )


def refresh(op: OIDCProvider, refresh_token: str) -> requests.Response:
    return requests.post(
        op.token_endpoint,
        data={"client_id": op.client_id, "grant_type": "refresh_token", "refresh_token": refresh_token},
        verify=op.ca_cert,
        timeout=10,
    )


def login(op: OIDCProvider, user: str = "alice", scope: str = SCOPE, **extra: str) -> dict[str, Any]:
    dev = device_authorize(op, scope, **extra)
    approve_device_code(dev["verification_uri"], dev["user_code"], user, op.ca_cert)
    resp = poll(op, dev["device_code"])
    assert resp.status_code == 200, resp.text
    return resp.json()


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def error_of(resp: requests.Response) -> str:
    assert resp.status_code == 400, (resp.status_code, resp.text)
    return resp.json()["error"]


# -- discovery -------------------------------------------------------------------------------------
def test_discovery_issuer_is_the_served_url(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    assert op.issuer.startswith("https://127.0.0.1:")
    assert not op.issuer.endswith("/")
    doc = requests.get(op.issuer + "/.well-known/openid-configuration", verify=op.ca_cert, timeout=10).json()
    assert doc["issuer"] == op.issuer
    for name in (
        "device_authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "jwks_uri",
    ):
        assert doc[name].startswith(op.issuer + "/"), name
    assert DEVICE_CODE_GRANT in doc["grant_types_supported"]
    assert {"openid", "profile", "email", "offline_access", "wlcg.groups"} <= set(doc["scopes_supported"])
    assert {"preferred_username", "email", "groups"} <= set(doc["claims_supported"])
    keys = op.jwks()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and "d" not in keys[0]


def test_trailing_slash_issuer_like_iam(oidc_provider_factory) -> None:
    op = oidc_provider_factory(trailing_slash=True)
    assert op.issuer.endswith("/")
    doc = requests.get(op.issuer + ".well-known/openid-configuration", verify=op.ca_cert, timeout=10).json()
    assert doc["issuer"] == op.issuer
    assert claims(login(op)["id_token"])["iss"] == op.issuer


def test_each_start_has_new_signing_keys(oidc_provider, oidc_provider_factory) -> None:
    other = oidc_provider_factory()
    assert oidc_provider.jwks()["keys"][0]["n"] != other.jwks()["keys"][0]["n"]


# -- the device flow -------------------------------------------------------------------------------
def test_device_flow_pending_then_tokens(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    dev = device_authorize(op)
    assert set(dev) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
    }  # no `interval`, like IAM
    assert dev["verification_uri"] == op.issuer + "/device"
    assert dev["expires_in"] == 600

    pending = poll(op, dev["device_code"])
    assert error_of(pending) == "authorization_pending"

    approve_device_code(dev["verification_uri"], dev["user_code"], login="alice", ca_cert=op.ca_cert)
    resp = poll(op, dev["device_code"])
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert {"access_token", "id_token", "refresh_token", "expires_in"} <= set(tokens)
    assert tokens["token_type"] == "Bearer"
    assert set(tokens["scope"].split()) == set(SCOPE.split())

    idt = claims(tokens["id_token"])
    assert idt["iss"] == op.issuer
    assert idt["aud"] == op.client_id
    assert idt["sub"] == "alice"
    assert idt["preferred_username"] == "alice"
    assert idt["email"] == "alice@example.org"
    assert idt["groups"] == ["users", "alice-group"]
    assert idt["exp"] - idt["iat"] == 600

    # A code that gave its tokens is spent.
    assert error_of(poll(op, dev["device_code"])) == "invalid_grant"


def test_id_token_signature_verifies_with_jwks(oidc_provider: OIDCProvider) -> None:
    jose_jwt = pytest.importorskip("joserfc.jwt")
    from joserfc.jwk import KeySet

    op = oidc_provider
    token = login(op, "dora")["id_token"]
    decoded = jose_jwt.decode(token, KeySet.import_key_set(op.jwks()), algorithms=["RS256"])
    assert decoded.claims["sub"] == "dora"


def test_verification_uri_complete_and_a_remembered_sign_in(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    browser = requests.Session()
    for _ in range(2):  # the second time the provider's sign-in cookie skips the login page
        dev = device_authorize(op)
        approve_device_code(dev["verification_uri_complete"], dev["user_code"], "erin", op.ca_cert, session=browser)
        assert claims(poll(op, dev["device_code"]).json()["id_token"])["sub"] == "erin"


def test_wlcg_groups_scope_and_account_overrides(oidc_provider_factory) -> None:
    op = oidc_provider_factory(accounts={"frank": {"groups": ["admins"], "email": "f@example.org"}})
    idt = claims(login(op, "frank", scope="openid profile email wlcg.groups")["id_token"])
    assert idt["groups"] == ["admins"]
    assert idt["email"] == "f@example.org"
    assert idt["wlcg.groups"] == ["/users", "/frank-group"]
    # Without offline_access there is no refresh token.
    assert "refresh_token" not in login(op, "frank", scope="openid profile")


@pytest.mark.parametrize("at", ["confirm", "login", "consent"])
def test_deny_gives_access_denied(oidc_provider: OIDCProvider, at: str) -> None:
    op = oidc_provider
    dev = device_authorize(op)
    deny_device_code(dev["verification_uri"], dev["user_code"], ca_cert=op.ca_cert, at=at)
    assert error_of(poll(op, dev["device_code"])) == "access_denied"
    # Once answered, the code is spent.
    assert error_of(poll(op, dev["device_code"])) == "invalid_grant"


def test_expired_device_code_gives_expired_token(oidc_provider_factory) -> None:
    op = oidc_provider_factory(device_code_ttl=2)
    dev = device_authorize(op)
    assert dev["expires_in"] == 2
    started = time.monotonic()
    deadline = started + 15
    while True:
        resp = poll(op, dev["device_code"])
        error = error_of(resp)
        if error != "authorization_pending" or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # polling cadence, not a wait for a guessed duration
    assert error == "expired_token", resp.text
    assert time.monotonic() - started >= 1
    # It stays expired_token (the provider keeps expired codes for a while).
    assert error_of(poll(op, dev["device_code"])) == "expired_token"
    # The person's browser is told the code is wrong.
    with pytest.raises(BrowserStandinError, match="not accepted"):
        approve_device_code(dev["verification_uri"], dev["user_code"], ca_cert=op.ca_cert)


def test_wrong_user_code_is_reported(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    device_authorize(op)
    with pytest.raises(BrowserStandinError, match="not accepted"):
        approve_device_code(op.issuer + "/device", "BCDF-GHJK", ca_cert=op.ca_cert)


def test_device_interval_option(oidc_provider_factory) -> None:
    op = oidc_provider_factory(device_interval=1)
    assert device_authorize(op)["interval"] == 1


# -- lifetimes -------------------------------------------------------------------------------------
def test_short_token_lifetimes(oidc_provider_factory) -> None:
    op = oidc_provider_factory(id_token_ttl=20, access_token_ttl=20)
    tokens = login(op)
    idt = claims(tokens["id_token"])
    assert idt["exp"] - idt["iat"] == 20
    assert tokens["expires_in"] == 20
    refreshed = refresh(op, tokens["refresh_token"]).json()
    idt2 = claims(refreshed["id_token"])
    assert idt2["exp"] - idt2["iat"] == 20
    assert refreshed["expires_in"] == 20


# -- refresh, rotation, revocation -----------------------------------------------------------------
def test_refresh_tokens_rotate_and_reuse_revokes_the_grant(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    first = login(op, "grace")
    resp = refresh(op, first["refresh_token"])
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert {"access_token", "id_token", "refresh_token"} <= set(second)
    assert second["refresh_token"] != first["refresh_token"]  # rotated (public client)
    assert claims(second["id_token"])["sub"] == "grace"
    # The old one is spent; using it again is taken as theft and kills the whole grant.
    assert error_of(refresh(op, first["refresh_token"])) == "invalid_grant"
    assert error_of(refresh(op, second["refresh_token"])) == "invalid_grant"


def test_refresh_without_rotation(oidc_provider_factory) -> None:
    op = oidc_provider_factory(rotate_refresh_tokens="never")
    first = login(op)
    a = refresh(op, first["refresh_token"]).json()
    b = refresh(op, first["refresh_token"]).json()
    assert a["refresh_token"] == b["refresh_token"] == first["refresh_token"]
    assert a["access_token"] != b["access_token"]


def test_revoked_refresh_token_gives_invalid_grant(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    tokens = login(op, "heidi")
    assert op.introspect(tokens["refresh_token"])["active"] is True
    resp = requests.post(
        op.revocation_endpoint,
        data={"client_id": op.client_id, "token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        verify=op.ca_cert,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert error_of(refresh(op, tokens["refresh_token"])) == "invalid_grant"
    assert op.introspect(tokens["refresh_token"]) == {"active": False}
    # Revoking the refresh token ends the grant: its access token dies with it.
    assert op.introspect(tokens["access_token"]) == {"active": False}


def test_introspection(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    tokens = login(op, "ivan")
    info = op.introspect(tokens["access_token"])
    assert info["active"] is True
    assert info["sub"] == "ivan"
    assert info["client_id"] == op.client_id
    assert info["iss"] == op.issuer
    assert op.introspect("not-a-token") == {"active": False}


def test_audience_gives_jwt_access_tokens(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    tokens = login(op, "judy", audience="kubernetes")
    assert claims(tokens["access_token"])["aud"] == "kubernetes"
    assert claims(tokens["id_token"])["aud"] == op.client_id
    refreshed = refresh(op, tokens["refresh_token"]).json()
    assert claims(refreshed["access_token"])["aud"] == "kubernetes"
    tokens = login(op, "judy", resource="https://127.0.0.1:6443")
    assert claims(tokens["access_token"])["aud"] == "https://127.0.0.1:6443"
    assert "." not in login(op, "judy")["access_token"]  # no audience: opaque


# -- the request log -------------------------------------------------------------------------------
def test_request_log_counts_token_requests(oidc_provider_factory) -> None:
    op = oidc_provider_factory()
    dev = device_authorize(op)
    assert error_of(poll(op, dev["device_code"])) == "authorization_pending"
    approve_device_code(dev["verification_uri"], dev["user_code"], ca_cert=op.ca_cert)
    rt = poll(op, dev["device_code"]).json()["refresh_token"]
    rt = refresh(op, rt).json()["refresh_token"]
    refresh(op, rt)

    assert len(op.token_requests()) == 4
    polls = op.token_requests("device_code")
    assert [r["status"] for r in polls] == [400, 200]
    assert polls[0]["error"] == "authorization_pending"
    assert op.token_requests(DEVICE_CODE_GRANT) == polls
    assert [r["status"] for r in op.token_requests("refresh_token")] == [200, 200]
    paths = [(r["method"], r["path"]) for r in op.requests()]
    assert ("POST", "/device/auth") in paths
    assert all({"time", "method", "path", "status"} <= set(r) for r in op.requests())


# -- process handling and the CLI ------------------------------------------------------------------
def test_stops_cleanly_on_sigterm(oidc_pki) -> None:
    op = OIDCProvider(oidc_pki).start()
    assert requests.get(op.url("/.well-known/openid-configuration"), verify=op.ca_cert, timeout=10).ok
    proc = op._proc
    op.stop()
    assert proc is not None and proc.returncode == 0
    assert not op.running


def test_bad_options_fail_fast(oidc_pki) -> None:
    op = OIDCProvider(oidc_pki, id_token_ttl=0)
    with pytest.raises(Exception, match="id-token-ttl"):
        op.start()


def test_browser_standin_cli(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    dev = device_authorize(op)
    cmd = [sys.executable, "-m", "tests.servers.browser_standin"]
    done = subprocess.run(
        [*cmd, "approve", dev["verification_uri"], dev["user_code"], "--login", "mallory", "--ca-cert", op.ca_cert],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert claims(poll(op, dev["device_code"]).json()["id_token"])["sub"] == "mallory"

    dev = device_authorize(op)
    done = subprocess.run(
        [*cmd, "deny", dev["verification_uri"], dev["user_code"], "--ca-cert", op.ca_cert],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert error_of(poll(op, dev["device_code"])) == "access_denied"

    done = subprocess.run(
        [*cmd, "approve", dev["verification_uri"], "ZZZZ-ZZZZ", "--ca-cert", op.ca_cert],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "not accepted" in done.stderr
