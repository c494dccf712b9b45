"""The real test OpenID provider and the browser stand-in, driven with plain HTTP.

These pin down how the provider the kubectl-iam tests log in against actually behaves
(error codes, refresh-token rotation, lifetimes), so that tests built on it rest on facts.
The first part covers the generic mode (``iam_like=False``, plain oidc-provider, for tests of
issuers other than IAM); the second, the default IAM-like mode, one section per fact of issue
12 (INDIGO IAM's behaviour as read from its source).
"""

from __future__ import annotations

import base64
import uuid
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
from tests.servers.oidc_provider import DEVICE_CODE_GRANT, OIDCProvider, OIDCProviderError


REPO = Path(__file__).resolve().parents[2]
SCOPE = "openid profile email offline_access"


@pytest.fixture(scope="module")
def generic_provider(oidc_provider_factory) -> OIDCProvider:
    return oidc_provider_factory(iam_like=False)


@pytest.fixture
def generic_factory(oidc_provider_factory):
    return lambda **options: oidc_provider_factory(iam_like=False, **options)


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
def test_discovery_issuer_is_the_served_url(generic_provider: OIDCProvider) -> None:
    op = generic_provider
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


def test_trailing_slash_issuer_like_iam(generic_factory) -> None:
    op = generic_factory(trailing_slash=True)
    assert op.issuer.endswith("/")
    doc = requests.get(op.issuer + ".well-known/openid-configuration", verify=op.ca_cert, timeout=10).json()
    assert doc["issuer"] == op.issuer
    assert claims(login(op)["id_token"])["iss"] == op.issuer


def test_each_start_has_new_signing_keys(generic_provider, generic_factory) -> None:
    other = generic_factory()
    assert generic_provider.jwks()["keys"][0]["n"] != other.jwks()["keys"][0]["n"]


# -- the device flow -------------------------------------------------------------------------------
def test_device_flow_pending_then_tokens(generic_provider: OIDCProvider) -> None:
    op = generic_provider
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


def test_id_token_signature_verifies_with_jwks(generic_provider: OIDCProvider) -> None:
    jose_jwt = pytest.importorskip("joserfc.jwt")
    from joserfc.jwk import KeySet

    op = generic_provider
    token = login(op, "dora")["id_token"]
    decoded = jose_jwt.decode(token, KeySet.import_key_set(op.jwks()), algorithms=["RS256"])
    assert decoded.claims["sub"] == "dora"


def test_verification_uri_complete_and_a_remembered_sign_in(generic_provider: OIDCProvider) -> None:
    op = generic_provider
    browser = requests.Session()
    for _ in range(2):  # the second time the provider's sign-in cookie skips the login page
        dev = device_authorize(op)
        approve_device_code(dev["verification_uri_complete"], dev["user_code"], "erin", op.ca_cert, session=browser)
        assert claims(poll(op, dev["device_code"]).json()["id_token"])["sub"] == "erin"


def test_wlcg_groups_scope_and_account_overrides(generic_factory) -> None:
    op = generic_factory(accounts={"frank": {"groups": ["admins"], "email": "f@example.org"}})
    idt = claims(login(op, "frank", scope="openid profile email wlcg.groups")["id_token"])
    assert idt["groups"] == ["admins"]
    assert idt["email"] == "f@example.org"
    assert idt["wlcg.groups"] == ["/users", "/frank-group"]
    # Without offline_access there is no refresh token.
    assert "refresh_token" not in login(op, "frank", scope="openid profile")


@pytest.mark.parametrize("at", ["confirm", "login", "consent"])
def test_deny_gives_access_denied(generic_provider: OIDCProvider, at: str) -> None:
    op = generic_provider
    dev = device_authorize(op)
    deny_device_code(dev["verification_uri"], dev["user_code"], ca_cert=op.ca_cert, at=at)
    assert error_of(poll(op, dev["device_code"])) == "access_denied"
    # Once answered, the code is spent.
    assert error_of(poll(op, dev["device_code"])) == "invalid_grant"


def test_expired_device_code_gives_expired_token(generic_factory) -> None:
    op = generic_factory(device_code_ttl=2)
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


def test_wrong_user_code_is_reported(generic_provider: OIDCProvider) -> None:
    op = generic_provider
    device_authorize(op)
    with pytest.raises(BrowserStandinError, match="not accepted"):
        approve_device_code(op.issuer + "/device", "BCDF-GHJK", ca_cert=op.ca_cert)


def test_device_interval_option(generic_factory) -> None:
    op = generic_factory(device_interval=1)
    assert device_authorize(op)["interval"] == 1


# -- lifetimes -------------------------------------------------------------------------------------
def test_short_token_lifetimes(generic_factory) -> None:
    op = generic_factory(id_token_ttl=20, access_token_ttl=20)
    tokens = login(op)
    idt = claims(tokens["id_token"])
    assert idt["exp"] - idt["iat"] == 20
    assert tokens["expires_in"] == 20
    refreshed = refresh(op, tokens["refresh_token"]).json()
    idt2 = claims(refreshed["id_token"])
    assert idt2["exp"] - idt2["iat"] == 20
    assert refreshed["expires_in"] == 20


# -- refresh, rotation, revocation -----------------------------------------------------------------
def test_refresh_tokens_rotate_and_reuse_revokes_the_grant(generic_provider: OIDCProvider) -> None:
    op = generic_provider
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


def test_refresh_without_rotation(generic_factory) -> None:
    op = generic_factory(rotate_refresh_tokens="never")
    first = login(op)
    a = refresh(op, first["refresh_token"]).json()
    b = refresh(op, first["refresh_token"]).json()
    assert a["refresh_token"] == b["refresh_token"] == first["refresh_token"]
    assert a["access_token"] != b["access_token"]


def test_revoked_refresh_token_gives_invalid_grant(generic_provider: OIDCProvider) -> None:
    op = generic_provider
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


def test_introspection(generic_provider: OIDCProvider) -> None:
    op = generic_provider
    tokens = login(op, "ivan")
    info = op.introspect(tokens["access_token"])
    assert info["active"] is True
    assert info["sub"] == "ivan"
    assert info["client_id"] == op.client_id
    assert info["iss"] == op.issuer
    assert op.introspect("not-a-token") == {"active": False}


def test_audience_gives_jwt_access_tokens(generic_provider: OIDCProvider) -> None:
    op = generic_provider
    tokens = login(op, "judy", audience="kubernetes")
    assert claims(tokens["access_token"])["aud"] == "kubernetes"
    assert claims(tokens["id_token"])["aud"] == op.client_id
    refreshed = refresh(op, tokens["refresh_token"]).json()
    assert claims(refreshed["access_token"])["aud"] == "kubernetes"
    tokens = login(op, "judy", resource="https://127.0.0.1:6443")
    assert claims(tokens["access_token"])["aud"] == "https://127.0.0.1:6443"
    assert "." not in login(op, "judy")["access_token"]  # no audience: opaque


# -- the request log -------------------------------------------------------------------------------
def test_request_log_counts_token_requests(generic_factory) -> None:
    op = generic_factory()
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
def _hanging_node(tmp_path: Path, hangs: int) -> Path:
    """A stand-in for `node` whose first `hangs` starts never get anywhere; later ones are node."""
    import shutil

    real = shutil.which("node") or "/usr/bin/node"
    script = tmp_path / "node"
    script.write_text(f"""#!/bin/sh
count=$(cat "{tmp_path}/starts" 2>/dev/null || echo 0)
echo $((count + 1)) > "{tmp_path}/starts"
# A hung start is node itself, idle forever, with the options that ask for a report on SIGUSR2.
if [ "$count" -lt {hangs} ]; then exec "{real}" "$1" "$2" "$3" -e 'setInterval(() => {{}}, 1000)'; fi
exec "{real}" "$@"
""")
    script.chmod(0o755)
    return script


def test_a_start_that_hangs_is_tried_once_more(oidc_pki, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NODE", str(_hanging_node(tmp_path, hangs=1)))
    with OIDCProvider(oidc_pki, startup_timeout=3) as op:
        assert requests.get(op.url("/.well-known/openid-configuration"), verify=op.ca_cert, timeout=10).ok
    assert (tmp_path / "starts").read_text().strip() == "2"


def test_two_hung_starts_are_an_error_that_says_so(oidc_pki, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NODE", str(_hanging_node(tmp_path, hangs=2)))
    with pytest.raises(OIDCProviderError) as failed:
        OIDCProvider(oidc_pki, startup_timeout=2).start()
    assert "not ready after 2" in str(failed.value) and "hung too" in str(failed.value)
    # Each hung start says what node was doing: its threads, and node's own report.
    said = str(failed.value)
    assert said.count("-- hung start, threads") == 2 and "node " in said
    assert said.count("-- libuv handles:") == 2 and "timer active=True" in said


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


def test_browser_standin_cli(generic_provider: OIDCProvider) -> None:
    op = generic_provider
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


# ==================================================================================================
# The IAM-like mode (the default): INDIGO IAM's behaviour, issue 12's facts 1-10
# ==================================================================================================
IAM_SCOPE = "openid profile email offline_access"


@pytest.fixture(scope="module")
def iam(oidc_provider: OIDCProvider) -> OIDCProvider:
    assert oidc_provider.iam_like
    return oidc_provider


def unique_login(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def post(op: OIDCProvider, url: str, data: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    return requests.post(url, data=data, verify=op.ca_cert, timeout=10, **kwargs)


def iam_device(op: OIDCProvider, client_id: str | None = None, scope: str = IAM_SCOPE, **extra: str) -> requests.Response:
    return post(op, op.device_authorization_endpoint, {"client_id": client_id or op.client_id, "scope": scope, **extra})


def iam_poll(op: OIDCProvider, device_code: str, client_id: str | None = None, auth: Any = None,
             **extra: str) -> requests.Response:
    data = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code, **extra}
    if auth is None:
        data["client_id"] = client_id or op.client_id
    return post(op, op.token_endpoint, data, auth=auth)


def iam_refresh(op: OIDCProvider, refresh_token: str, client_id: str | None = None, **extra: str) -> requests.Response:
    return post(op, op.token_endpoint, {"client_id": client_id or op.client_id, "grant_type": "refresh_token",
                                        "refresh_token": refresh_token, **extra})


def iam_login(op: OIDCProvider, user: str = "alice", client_id: str | None = None, scope: str = IAM_SCOPE,
              device_extra: dict[str, str] | None = None, **token_extra: str) -> dict[str, Any]:
    resp = iam_device(op, client_id, scope, **(device_extra or {}))
    assert resp.status_code == 200, resp.text
    dev = resp.json()
    approve_device_code(dev["verification_uri"], dev["user_code"], user, op.ca_cert)
    resp = iam_poll(op, dev["device_code"], client_id, **token_extra)
    assert resp.status_code == 200, resp.text
    return resp.json()


def oauth_error(resp: requests.Response, status: int) -> tuple[str, str]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    return body["error"], body.get("error_description", "")


def poll_until_not_pending(op: OIDCProvider, device_code: str, limit: float = 15) -> requests.Response:
    deadline = time.monotonic() + limit
    while True:
        resp = iam_poll(op, device_code)
        if resp.status_code != 400 or resp.json()["error"] != "authorization_pending" or time.monotonic() > deadline:
            return resp
        time.sleep(0.1)  # polling cadence, not a wait for a guessed duration


# -- fact 1: issuer with a trailing slash, IAM's paths ---------------------------------------------
def test_iam_discovery_issuer_and_paths(iam: OIDCProvider) -> None:
    op = iam
    assert op.issuer.startswith("https://127.0.0.1:") and op.issuer.endswith("/")
    doc = requests.get(op.issuer + ".well-known/openid-configuration", verify=op.ca_cert, timeout=10).json()
    assert doc["issuer"] == op.issuer
    paths = {
        "device_authorization_endpoint": "devicecode",
        "token_endpoint": "token",
        "revocation_endpoint": "revoke",
        "introspection_endpoint": "introspect",
        "jwks_uri": "jwk",
        "userinfo_endpoint": "userinfo",
        "registration_endpoint": "iam/api/client-registration",
    }
    for name, path in paths.items():
        assert doc[name] == op.issuer + path, name
    assert DEVICE_CODE_GRANT in doc["grant_types_supported"]
    assert {"openid", "profile", "email", "offline_access", "wlcg.groups", "wlcg"} <= set(doc["scopes_supported"])
    keys = requests.get(op.issuer + "jwk", verify=op.ca_cert, timeout=10).json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and "d" not in keys[0]
    # oidc-provider's own paths are not served.
    for path in ("device/auth", "token/revocation", "token/introspection", "jwks", "me", "reg"):
        assert post(op, op.issuer + path, {"client_id": op.client_id}).status_code == 404, path


def test_iam_id_token_iss_has_the_slash(iam: OIDCProvider) -> None:
    tokens = iam_login(iam)
    assert claims(tokens["id_token"])["iss"] == iam.issuer
    assert claims(tokens["access_token"])["iss"] == iam.issuer


# -- fact 2: client_id in the device form; Basic ignored there -------------------------------------
def test_iam_device_endpoint_needs_client_id_in_the_form(iam: OIDCProvider) -> None:
    op = iam
    secret = (op.confidential_client_id, op.confidential_client_secret)
    # Only HTTP Basic: IAM's controller finds no client_id parameter (Spring: 400, no OAuth error).
    only_basic = post(op, op.device_authorization_endpoint, {"scope": "openid"}, auth=secret)
    assert only_basic.status_code == 400 and only_basic.text == ""
    blank = post(op, op.device_authorization_endpoint, {"client_id": " ", "scope": "openid"})
    assert blank.status_code == 400 and blank.text == ""
    # With client_id in the form: Basic is not needed, and a wrong secret there is not even read.
    for auth in (secret, (op.confidential_client_id, "wrong"), None):
        resp = post(op, op.device_authorization_endpoint, {"client_id": op.confidential_client_id, "scope": IAM_SCOPE},
                    auth=auth)
        assert resp.status_code == 200, (auth, resp.text)


def test_iam_confidential_client_signs_in(iam: OIDCProvider) -> None:
    op = iam
    secret = (op.confidential_client_id, op.confidential_client_secret)
    dev = iam_device(op, op.confidential_client_id).json()
    assert oauth_error(iam_poll(op, dev["device_code"], auth=secret), 400)[0] == "authorization_pending"
    # The token endpoint does authenticate the client.
    assert oauth_error(iam_poll(op, dev["device_code"], client_id=op.confidential_client_id), 401)[0] == "invalid_client"
    approve_device_code(dev["verification_uri"], dev["user_code"], "carol", op.ca_cert)
    tokens = iam_poll(op, dev["device_code"], auth=secret).json()
    assert claims(tokens["id_token"])["aud"] == op.confidential_client_id
    refreshed = post(op, op.token_endpoint, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                     auth=secret)
    assert refreshed.status_code == 200, refreshed.text


# -- fact 3: the device answer ---------------------------------------------------------------------
def test_iam_device_answer(iam: OIDCProvider) -> None:
    resp = iam_device(iam)
    assert resp.status_code == 200, resp.text
    dev = resp.json()
    assert set(dev) == {"device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in"}
    assert dev["verification_uri"] == iam.issuer + "device"
    assert dev["verification_uri_complete"] == f"{iam.issuer}device?user_code={dev['user_code']}"
    assert dev["expires_in"] == 600


def test_iam_device_interval_option_still_adds_one(oidc_provider_factory) -> None:
    op = oidc_provider_factory(device_interval=1)
    assert iam_device(op).json()["interval"] == 1


# -- fact 4: polling -------------------------------------------------------------------------------
def test_iam_polling_is_pending_and_never_slow_down(iam: OIDCProvider) -> None:
    dev = iam_device(iam).json()
    for _ in range(5):  # back to back, far faster than the 5 s IAM expects
        assert oauth_error(iam_poll(iam, dev["device_code"]), 400)[0] == "authorization_pending"
    approve_device_code(dev["verification_uri"], dev["user_code"], "dave", iam.ca_cert)
    assert iam_poll(iam, dev["device_code"]).status_code == 200
    # A used code is gone (and nothing is revoked for asking again).
    assert oauth_error(iam_poll(iam, dev["device_code"]), 400)[0] == "invalid_grant"


def test_iam_expired_code_answers_expired_token_once(oidc_provider_factory) -> None:
    op = oidc_provider_factory(device_code_ttl=2)
    dev = iam_device(op).json()
    assert dev["expires_in"] == 2
    started = time.monotonic()
    resp = poll_until_not_pending(op, dev["device_code"])
    assert oauth_error(resp, 400)[0] == "expired_token"
    assert time.monotonic() - started >= 1
    assert oauth_error(iam_poll(op, dev["device_code"]), 400)[0] == "invalid_grant"
    assert oauth_error(iam_poll(op, dev["device_code"]), 400)[0] == "invalid_grant"


@pytest.mark.parametrize("at", ["confirm", "login", "consent"])
def test_iam_deny_leaves_the_code_pending(iam: OIDCProvider, at: str) -> None:
    dev = iam_device(iam).json()
    deny_device_code(dev["verification_uri"], dev["user_code"], ca_cert=iam.ca_cert, at=at)
    for _ in range(3):
        assert oauth_error(iam_poll(iam, dev["device_code"]), 400)[0] == "authorization_pending"
    # As at IAM, the person may change their mind and enter the code again.
    approve_device_code(dev["verification_uri"], dev["user_code"], "erin", iam.ca_cert)
    assert claims(iam_poll(iam, dev["device_code"]).json()["id_token"])["sub"] == "erin"


def test_iam_denied_then_expired_code(oidc_provider_factory) -> None:
    op = oidc_provider_factory(device_code_ttl=2)
    dev = iam_device(op).json()
    deny_device_code(dev["verification_uri"], dev["user_code"], ca_cert=op.ca_cert)
    assert oauth_error(poll_until_not_pending(op, dev["device_code"]), 400)[0] == "expired_token"


# -- fact 5: scope, grant and client errors at the device endpoint ---------------------------------
def test_iam_device_request_errors(iam: OIDCProvider) -> None:
    op = iam
    error, description = oauth_error(iam_device(op, op.no_offline_client_id, "openid offline_access"), 400)
    assert error == "invalid_scope" and op.no_offline_client_id in description
    assert oauth_error(iam_device(op, scope="openid phone"), 400)[0] == "invalid_scope"
    error, description = oauth_error(iam_device(op, op.no_device_client_id, "openid"), 401)
    assert (error, description) == ("invalid_client", f"Unauthorized grant type: {DEVICE_CODE_GRANT}")
    unknown = iam_device(op, "no-such-client", "openid")
    assert unknown.status_code == 404 and unknown.text == ""
    with pytest.raises(ValueError):
        unknown.json()
    # A client without offline_access signs in with the scopes it has, and gets no refresh token.
    tokens = iam_login(op, client_id=op.no_offline_client_id, scope="openid profile")
    assert "refresh_token" not in tokens and "id_token" in tokens


# -- fact 6: ID tokens -----------------------------------------------------------------------------
def test_iam_id_token_claims(iam: OIDCProvider) -> None:
    tokens = iam_login(iam, "frank", scope="openid profile email offline_access wlcg.groups")
    idt = claims(tokens["id_token"])
    assert idt["aud"] == iam.client_id  # nimbus-jose-jwt writes IAM's one-element list as a string
    assert idt["exp"] - idt["iat"] == 600
    assert idt["sub"] == idt["preferred_username"] == idt["name"] == "frank"
    assert idt["organisation_name"] == "indigo-dc"
    assert idt["groups"] == ["users", "frank-group"]
    assert idt["email"] == "frank@example.org"
    assert "wlcg.groups" not in idt and "email_verified" not in idt  # IAM profile
    assert idt["jti"] and idt["kid"] == iam.jwks()["keys"][0]["kid"]
    # Without profile, no profile claims.
    idt = claims(iam_login(iam, "frank", scope="openid")["id_token"])
    assert not {"name", "preferred_username", "groups", "organisation_name", "email"} & set(idt)


def test_iam_id_token_signature_and_refresh(iam: OIDCProvider) -> None:
    jose_jwt = pytest.importorskip("joserfc.jwt")
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set(iam.jwks())
    tokens = iam_login(iam, "gina")
    for token in (tokens["id_token"], tokens["access_token"]):
        assert jose_jwt.decode(token, keys, algorithms=["RS256"]).claims["sub"] == "gina"
    refreshed = iam_refresh(iam, tokens["refresh_token"]).json()
    idt = jose_jwt.decode(refreshed["id_token"], keys, algorithms=["RS256"]).claims
    assert idt["sub"] == "gina" and idt["exp"] - idt["iat"] == 600 and idt["groups"] == ["users", "gina-group"]


def test_iam_wlcg_profile_replaces_groups(iam: OIDCProvider, oidc_provider_factory) -> None:
    idt = claims(iam_login(iam, "hank", client_id=iam.wlcg_client_id,
                           scope="openid profile wlcg.groups offline_access")["id_token"])
    assert idt["wlcg.groups"] == ["/users", "/hank-group"] and "groups" not in idt
    assert idt["wlcg.ver"] == "1.0" and idt["preferred_username"] == "hank"
    # Without a wlcg.groups scope the WLCG profile gives no groups at all.
    idt = claims(iam_login(iam, "hank", client_id=iam.wlcg_client_id, scope="openid profile")["id_token"])
    assert "groups" not in idt and "wlcg.groups" not in idt
    # The server-wide default profile applies to clients that name none.
    op = oidc_provider_factory(default_profile="wlcg", organisation_name="infn-cloud")
    idt = claims(iam_login(op, "hank", scope="openid profile wlcg.groups")["id_token"])
    assert idt["wlcg.groups"] == ["/users", "/hank-group"] and "groups" not in idt
    assert idt["organisation_name"] == "infn-cloud"


def test_iam_id_token_aud_array_option_and_lifetime(oidc_provider_factory) -> None:
    op = oidc_provider_factory(id_token_aud_array=True, id_token_ttl=20, access_token_ttl=30)
    tokens = iam_login(op)
    idt = claims(tokens["id_token"])
    assert idt["aud"] == [op.client_id] and idt["exp"] - idt["iat"] == 20
    assert tokens["expires_in"] == 30
    at = claims(tokens["access_token"])
    assert at["exp"] - at["iat"] == 30


# -- fact 7: refresh tokens ------------------------------------------------------------------------
def test_iam_refresh_token_only_with_offline_access(iam: OIDCProvider) -> None:
    assert "refresh_token" not in iam_login(iam, scope="openid profile")
    assert "refresh_token" in iam_login(iam, scope="openid offline_access")


def test_iam_preconfigured_clients_rotate_and_the_old_token_dies_alone(iam: OIDCProvider) -> None:
    first = iam_login(iam, "ivan")
    second = iam_refresh(iam, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    error, description = oauth_error(iam_refresh(iam, first["refresh_token"]), 401)
    assert error == "invalid_token" and description.startswith("Invalid refresh token")
    # Unlike oidc-provider, reusing the old one does not revoke the grant.
    third = iam_refresh(iam, second["refresh_token"])
    assert third.status_code == 200, third.text


def test_iam_registered_clients_reuse_their_refresh_token(iam: OIDCProvider) -> None:
    client = iam.register_client(client_name="reuse", grant_types=[DEVICE_CODE_GRANT], scope=IAM_SCOPE,
                                 token_endpoint_auth_method="none")
    first = iam_login(iam, "judy", client_id=client["client_id"])
    a = iam_refresh(iam, first["refresh_token"], client["client_id"]).json()
    b = iam_refresh(iam, first["refresh_token"], client["client_id"]).json()
    assert a["refresh_token"] == b["refresh_token"] == first["refresh_token"]
    assert a["access_token"] != b["access_token"]


def test_iam_rotation_options(oidc_provider_factory) -> None:
    op = oidc_provider_factory(rotate_refresh_tokens="never")
    first = iam_login(op)
    assert iam_refresh(op, first["refresh_token"]).json()["refresh_token"] == first["refresh_token"]
    op = oidc_provider_factory(rotate_refresh_tokens="always")
    client = op.register_client(client_name="rotating", grant_types=[DEVICE_CODE_GRANT], scope=IAM_SCOPE,
                                token_endpoint_auth_method="none")
    first = iam_login(op, client_id=client["client_id"])
    assert iam_refresh(op, first["refresh_token"], client["client_id"]).json()["refresh_token"] != first["refresh_token"]


def test_iam_refresh_token_lifetime_is_absolute(oidc_provider_factory) -> None:
    op = oidc_provider_factory(refresh_token_ttl=3, rotate_refresh_tokens="never")
    tokens = iam_login(op)
    expires = op.introspect(tokens["refresh_token"])["exp"]
    assert iam_refresh(op, tokens["refresh_token"]).status_code == 200
    assert op.introspect(tokens["refresh_token"])["exp"] == expires  # using it does not extend it
    deadline = time.monotonic() + 15
    while (resp := iam_refresh(op, tokens["refresh_token"])).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling cadence, not a guessed wait
    error, description = oauth_error(resp, 401)
    assert error == "invalid_token" and "refresh token" in description


def test_iam_refresh_errors(iam: OIDCProvider) -> None:
    assert oauth_error(iam_refresh(iam, "no-such-token"), 401)[0] == "invalid_token"
    # Another client's refresh token: invalid_client, and the token is gone.
    tokens = iam_login(iam, "kate")
    error, _ = oauth_error(iam_refresh(iam, tokens["refresh_token"], iam.wlcg_client_id), 401)
    assert error == "invalid_client"
    assert oauth_error(iam_refresh(iam, tokens["refresh_token"]), 401)[0] == "invalid_token"


def test_iam_suspended_account_and_aup(iam: OIDCProvider) -> None:
    login = unique_login("leo")
    tokens = iam_login(iam, login)
    iam.suspend(login)
    error, description = oauth_error(iam_refresh(iam, tokens["refresh_token"]), 401)
    assert error == "unauthorized" and login in description
    iam.reinstate(login)
    refreshed = iam_refresh(iam, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    iam.require_aup(login)
    error, description = oauth_error(iam_refresh(iam, refreshed.json()["refresh_token"]), 400)
    assert error == "invalid_grant" and "AUP" in description
    iam.require_aup(login, False)
    assert iam_refresh(iam, refreshed.json()["refresh_token"]).status_code == 200
    assert iam.set_account(login) == {"login": login, "suspended": False, "aup_due": False}


def test_iam_no_scope_on_refresh_keeps_the_scopes(iam: OIDCProvider) -> None:
    tokens = iam_login(iam, scope="openid profile offline_access")
    refreshed = iam_refresh(iam, tokens["refresh_token"]).json()
    assert set(refreshed["scope"].split()) == {"openid", "profile", "offline_access"}
    narrower = iam_refresh(iam, refreshed["refresh_token"], scope="openid offline_access").json()
    assert set(narrower["scope"].split()) == {"openid", "offline_access"}


# -- fact 8: audience on the token request; JWT access tokens --------------------------------------
def test_iam_access_tokens_are_jwts(iam: OIDCProvider) -> None:
    tokens = iam_login(iam, "mike")
    header = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[0] + "=="))
    assert header["alg"] == "RS256" and header["kid"] == iam.jwks()["keys"][0]["kid"]
    at = claims(tokens["access_token"])
    assert set(at) == {"iss", "sub", "exp", "iat", "jti", "client_id"}  # no aud asked for, no groups
    assert at["iss"] == iam.issuer and at["sub"] == "mike" and at["client_id"] == iam.client_id
    assert at["exp"] - at["iat"] == 3600 == tokens["expires_in"]
    # The JWT works where the provider's own token would.
    assert iam.introspect(tokens["access_token"])["active"] is True
    me = requests.get(iam.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"},
                      verify=iam.ca_cert, timeout=10)
    assert me.status_code == 200 and me.json()["sub"] == "mike"


def test_iam_audience_on_the_token_request(iam: OIDCProvider) -> None:
    # On the device request it is not carried over.
    tokens = iam_login(iam, device_extra={"audience": "kubernetes"})
    assert "aud" not in claims(tokens["access_token"])
    for name in ("audience", "aud"):
        tokens = iam_login(iam, **{name: "kubernetes"})
        assert claims(tokens["access_token"])["aud"] == "kubernetes", name
        assert claims(tokens["id_token"])["aud"] == iam.client_id
    # `resource` (RFC 8707) wins over the others; IAM 1.12 wants it named at the device request.
    api = "https://127.0.0.1:6443"
    tokens = iam_login(iam, device_extra={"resource": api}, resource=api, audience="kubernetes")
    assert claims(tokens["access_token"])["aud"] == api
    tokens = iam_login(iam, audience="one two")
    assert claims(tokens["access_token"])["aud"] == ["one", "two"]


def test_iam_audience_across_refreshes(iam: OIDCProvider) -> None:
    tokens = iam_login(iam, audience="kubernetes")
    kept = iam_refresh(iam, tokens["refresh_token"]).json()
    assert claims(kept["access_token"])["aud"] == "kubernetes"
    other = iam_refresh(iam, kept["refresh_token"], audience="other").json()
    assert claims(other["access_token"])["aud"] == "other"
    # A refresh with no audience goes back to the one the grant began with.
    assert claims(iam_refresh(iam, other["refresh_token"]).json()["access_token"])["aud"] == "kubernetes"
    # Without any audience at the start, none later either.
    tokens = iam_login(iam)
    assert "aud" not in claims(iam_refresh(iam, tokens["refresh_token"]).json()["access_token"])


def test_iam_device_request_resource_bounds_the_audience(iam: OIDCProvider) -> None:
    api = "https://127.0.0.1:6443"
    tokens = iam_login(iam, device_extra={"resource": api})
    assert claims(tokens["access_token"])["aud"] == api
    dev = iam_device(iam, resource=api).json()
    approve_device_code(dev["verification_uri"], dev["user_code"], "nina", iam.ca_cert)
    error, _ = oauth_error(iam_poll(iam, dev["device_code"], audience="elsewhere"), 400)
    assert error == "invalid_target"
    # No resource at the device request: a token request's resource is refused.
    dev = iam_device(iam).json()
    approve_device_code(dev["verification_uri"], dev["user_code"], "nina", iam.ca_cert)
    assert oauth_error(iam_poll(iam, dev["device_code"], resource=api), 400)[0] == "invalid_target"


def test_iam_access_token_iss_without_slash_option(oidc_provider_factory) -> None:
    op = oidc_provider_factory(access_token_iss_without_slash=True)
    tokens = iam_login(op)
    assert op.issuer.endswith("/")
    assert claims(tokens["access_token"])["iss"] == op.issuer.rstrip("/")
    assert claims(tokens["id_token"])["iss"] == op.issuer


# -- fact 9: revocation ----------------------------------------------------------------------------
def test_iam_revocation(iam: OIDCProvider) -> None:
    op = iam
    tokens = iam_login(op, "olga")
    unauthenticated = post(op, op.revocation_endpoint, {"token": tokens["refresh_token"]})
    assert oauth_error(unauthenticated, 401)[0] == "unauthorized"
    assert op.introspect(tokens["refresh_token"])["active"] is True
    # A public client names itself (with an empty secret, as IAM's clients do); the hint is ignored.
    revoked = post(op, op.revocation_endpoint, {"client_id": op.client_id, "client_secret": "",
                                               "token": tokens["refresh_token"], "token_type_hint": "access_token"})
    assert revoked.status_code == 200, revoked.text
    assert oauth_error(iam_refresh(op, tokens["refresh_token"]), 401)[0] == "invalid_token"
    assert op.introspect(tokens["access_token"]) == {"active": False}  # its access tokens went with it
    unknown = post(op, op.revocation_endpoint, {"client_id": op.client_id, "token": "never-issued"})
    assert unknown.status_code == 200
    # An access token (our JWT) alone.
    tokens = iam_login(op, "olga")
    assert post(op, op.revocation_endpoint, {"client_id": op.client_id, "token": tokens["access_token"]}).ok
    assert op.introspect(tokens["access_token"]) == {"active": False}
    assert iam_refresh(op, tokens["refresh_token"]).status_code == 200


def test_iam_introspection_needs_basic(iam: OIDCProvider) -> None:
    tokens = iam_login(iam)
    resp = post(iam, iam.introspection_endpoint, {"client_id": iam.client_id, "token": tokens["access_token"]})
    assert oauth_error(resp, 401)[0] == "unauthorized"


# -- fact 10: dynamic client registration, open to anyone ------------------------------------------
def test_iam_registration_of_public_and_confidential_clients(iam: OIDCProvider) -> None:
    op = iam
    public = op.register_client(client_name="public", grant_types=[DEVICE_CODE_GRANT], scope=IAM_SCOPE,
                                token_endpoint_auth_method="none")
    assert "client_secret" not in public
    assert set(public["grant_types"]) == {DEVICE_CODE_GRANT, "refresh_token"}  # offline_access adds it
    assert public["scope"] == IAM_SCOPE
    assert public["registration_client_uri"] == f"{op.registration_endpoint}/{public['client_id']}"
    assert public["registration_access_token"]
    assert claims(iam_login(op, "pam", client_id=public["client_id"])["id_token"])["aud"] == public["client_id"]

    confidential = op.register_client(
        client_name="confidential", grant_types=[DEVICE_CODE_GRANT, "refresh_token", "authorization_code"],
        redirect_uris=["http://127.0.0.1:8400/callback", "http://[::1]:8400/callback"], scope=IAM_SCOPE)
    assert confidential["client_secret"] and confidential["token_endpoint_auth_method"] == "client_secret_basic"
    secret = (confidential["client_id"], confidential["client_secret"])
    dev = iam_device(op, confidential["client_id"]).json()
    approve_device_code(dev["verification_uri"], dev["user_code"], "pam", op.ca_cert)
    assert "refresh_token" in iam_poll(op, dev["device_code"], auth=secret).json()

    # RFC 7592: read and delete with the registration access token; then the client is gone.
    bearer = {"Authorization": f"Bearer {confidential['registration_access_token']}"}
    read = requests.get(confidential["registration_client_uri"], headers=bearer, verify=op.ca_cert, timeout=10)
    assert read.status_code == 200 and read.json()["client_id"] == confidential["client_id"]
    gone = requests.delete(confidential["registration_client_uri"], headers=bearer, verify=op.ca_cert, timeout=10)
    assert gone.status_code == 204
    assert iam_device(op, confidential["client_id"]).status_code == 404
    wrong = requests.delete(public["registration_client_uri"], headers=bearer, verify=op.ca_cert, timeout=10)
    assert wrong.status_code == 401


def test_iam_registration_rules(iam: OIDCProvider) -> None:
    op = iam

    def register(**metadata: Any) -> requests.Response:
        return requests.post(op.registration_endpoint, json=metadata, verify=op.ca_cert, timeout=10)

    assert register(grant_types=[DEVICE_CODE_GRANT]).status_code == 400  # no client_name
    assert register(client_name="x").status_code == 400  # no grant type
    assert register(client_name="x", grant_types=["password"]).status_code == 400
    without_device = register(client_name="x", grant_types=["authorization_code"],
                              redirect_uris=["http://127.0.0.1:9/cb"], token_endpoint_auth_method="none").json()
    assert without_device["scope"] == "openid profile email"  # the defaults
    error, _ = oauth_error(iam_device(op, without_device["client_id"], "openid"), 401)
    assert error == "invalid_client"


# -- the request log and the stand-in in IAM mode --------------------------------------------------
def test_iam_request_log(oidc_provider_factory) -> None:
    op = oidc_provider_factory()
    dev = iam_device(op).json()
    iam_poll(op, dev["device_code"])
    approve_device_code(dev["verification_uri"], dev["user_code"], ca_cert=op.ca_cert)
    tokens = iam_poll(op, dev["device_code"]).json()
    iam_refresh(op, "dead")
    iam_refresh(op, tokens["refresh_token"])
    op.suspend("nobody")  # the tests' control requests are not logged
    assert [r["status"] for r in op.token_requests("device_code")] == [400, 200]
    assert [(r["status"], r.get("error")) for r in op.token_requests("refresh_token")] == [(401, "invalid_token"),
                                                                                          (200, None)]
    paths = [(r["method"], r["path"], r.get("route")) for r in op.requests()]
    assert ("POST", "/devicecode", "device_authorization") in paths
    assert not any("_kubectl-caas-test" in r["path"] for r in op.requests())


def test_iam_browser_standin_cli(iam: OIDCProvider) -> None:
    cmd = [sys.executable, "-m", "tests.servers.browser_standin"]
    dev = iam_device(iam).json()
    done = subprocess.run([*cmd, "deny", dev["verification_uri"], dev["user_code"], "--ca-cert", iam.ca_cert],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert oauth_error(iam_poll(iam, dev["device_code"]), 400)[0] == "authorization_pending"
    done = subprocess.run([*cmd, "approve", dev["verification_uri"], dev["user_code"], "--login", "quinn",
                           "--ca-cert", iam.ca_cert], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert claims(iam_poll(iam, dev["device_code"]).json()["id_token"])["sub"] == "quinn"


def test_iam_only_options_refused_in_generic_mode(oidc_pki) -> None:
    with pytest.raises(ValueError, match="id_token_aud_array"):
        OIDCProvider(oidc_pki, iam_like=False, id_token_aud_array=True)
