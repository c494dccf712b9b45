"""Faults at Keystone and at the OpenID provider (issue 5, item 1), through tests/servers/faults.py.

Every failure must end with one clear line on stderr (naming the HTTP status when there is one),
a non-zero exit, no traceback, and the kubeconfig and token cache exactly as they were. So each
test first logs in successfully and snapshots both, then runs the failing command: a login with
--force (allowed to overwrite, so it must take care not to), or get-token on an expired entry.
The one exception to "one line" is a fault during the device-code poll: the code is on stderr
before the first poll, so there the error must be the one line after it.

Keystone: the plugin talks to a real Keystone through a FaultProxy (OS_AUTH_URL = proxy + /v3).

OpenID provider: the ID token names the provider's real issuer, and kubectl-iam checks it against
the issuer it was given, so a login cannot succeed through the proxy. The prior login goes to the
provider directly; the failing logins use the proxy as the issuer (the proxy rewrites the
discovery document, issuer included, so discovery passes and the later endpoints are the
proxy's) and fail before any ID token is checked. get-token's refresh goes through the proxy by
pointing the cached discovery document's endpoints at it.
"""
from __future__ import annotations

import json

import pytest

from tests.integration import hostile_fixtures as shared
from tests.integration.harness import exec_credential
from tests.integration.hostile_fixtures import (
    BOUND,
    DEVICE_AUTH,
    DISCOVERY,
    PASSWORD,
    SHORT_BUDGET,
    TOKEN,
    TOKENS,
    assert_clean_failure,
    exec_args,
    iam_relogin,
    relogin,
    state,
    timed,
)
from tests.servers.faults import ConnectBlackHole, GarbageTLSServer
from tests.servers.tls import make_pki

# The shared fixtures (tests/integration/hostile_fixtures.py), visible to this module's tests.
project, keystone_proxy, os_user, os_site, os_logged_in, os_expired = (
    shared.project, shared.keystone_proxy, shared.os_user, shared.os_site, shared.os_logged_in, shared.os_expired)
provider, oidc_proxy, iam_site, iam_logged_in, iam_expired = (
    shared.provider, shared.oidc_proxy, shared.iam_site, shared.iam_logged_in, shared.iam_expired)

HTML_503 = "<html><body><h1>503 Service Unavailable</h1>No server is available.</body></html>"
HTML_403 = "<html><body><h1>403 Forbidden</h1>Request blocked by the web application firewall.</body></html>"
MALFORMED_JSON = '{"token": {"methods": ["password"], "expires_at": '
OVERSIZED_JSON = b'{"padding": "' + b"x" * (5 << 20) + b'"}'  # 5 MB of valid JSON


# ---------------------------------------------------------------------------------------------
# Keystone


def test_keystone_connection_refused(os_site, os_user, project, keystone_proxy, os_logged_in):
    url = keystone_proxy.url + "/v3"
    keystone_proxy.stop()  # nothing listens on its port any more
    line = assert_clean_failure(relogin(os_site, os_user, project), 4, "cannot reach Keystone", url)
    assert line.startswith("kubectl-openstack: error:")
    assert state(os_site) == os_logged_in


def test_keystone_tls_handshake_failure(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.garble_tls()
    assert_clean_failure(relogin(os_site, os_user, project), 4, "TLS", keystone_proxy.url)
    assert state(os_site) == os_logged_in



def test_keystone_tls_handshake_failure_is_not_blamed_on_the_ca(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.garble_tls()
    line = assert_clean_failure(relogin(os_site, os_user, project), 4, "TLS")
    assert state(os_site) == os_logged_in
    assert "verification" not in line and "--cacert" not in line


def test_keystone_untrusted_certificate(os_site, os_user, project, keystone_proxy, os_logged_in, tmp_path):
    other = make_pki(tmp_path / "other", name="untrusted")
    keystone_proxy.use_certificate(other.server_cert, other.server_key)
    assert_clean_failure(relogin(os_site, os_user, project), 4, "TLS verification", "--cacert")
    assert state(os_site) == os_logged_in


def test_keystone_read_timeout_is_bounded(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.hang("POST", TOKENS)
    result, elapsed = timed(lambda: relogin(os_site, os_user, project, env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert keystone_proxy.count("POST", TOKENS) == 1  # a timeout is not retried
    assert state(os_site) == os_logged_in


def test_keystone_tls_handshake_timeout_is_bounded(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.stall_tls()
    result, elapsed = timed(lambda: relogin(os_site, os_user, project, env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert state(os_site) == os_logged_in


def test_keystone_connect_timeout_is_bounded(os_site, os_user, project, os_logged_in):
    with ConnectBlackHole() as hole:
        env = {**SHORT_BUDGET, "OS_AUTH_URL": hole.url + "/v3"}
        result, elapsed = timed(lambda: relogin(os_site, os_user, project, env=env))
    assert_clean_failure(result, 4, "did not answer in time", hole.url)
    assert elapsed < BOUND
    assert state(os_site) == os_logged_in


def test_keystone_retries_share_one_time_budget(os_site, os_user, project, keystone_proxy, os_logged_in):
    # A 503, then no answer: the retry gets what is left of the budget, not a budget of its own.
    keystone_proxy.respond("POST", TOKENS, 503, HTML_503, times=1)
    keystone_proxy.hang("POST", TOKENS)
    result, elapsed = timed(lambda: relogin(os_site, os_user, project, env={"KUBECTL_CAAS_TIMEOUT": "4"}))
    assert_clean_failure(result, 4, "did not answer in time")
    assert keystone_proxy.count("POST", TOKENS) == 2
    assert elapsed < 10  # 4 s in all plus start-up; a fresh 4 s per try would take over 9.5 s
    assert state(os_site) == os_logged_in


def test_keystone_connection_closed_without_answer(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.close_connection("POST", TOKENS)
    assert_clean_failure(relogin(os_site, os_user, project), 4, "cannot reach Keystone")
    assert state(os_site) == os_logged_in


def test_keystone_transient_503_twice_then_login_succeeds(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.respond("POST", TOKENS, 503, HTML_503, times=2)
    result = relogin(os_site, os_user, project)
    assert result.returncode == 0, result.stderr
    assert "kubectl configured correctly" in result.stdout
    assert keystone_proxy.count("POST", TOKENS) == 3


def test_keystone_503_always_fails_after_three_tries(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.respond("POST", TOKENS, 503, HTML_503)
    result, elapsed = timed(lambda: relogin(os_site, os_user, project))
    assert_clean_failure(result, 1, "HTTP 503", "Keystone")
    assert keystone_proxy.count("POST", TOKENS) == 3
    assert elapsed >= 1.5  # it backed off (0.5 s, then 1 s) between the tries
    assert state(os_site) == os_logged_in


def test_keystone_4xx_with_html_body(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.respond("POST", TOKENS, 403, HTML_403)
    assert_clean_failure(relogin(os_site, os_user, project), 1, "HTTP 403")
    assert keystone_proxy.count("POST", TOKENS) == 1  # a 4xx is not retried
    assert state(os_site) == os_logged_in


def test_keystone_malformed_json(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.respond("POST", TOKENS, 201, MALFORMED_JSON, "application/json")
    assert_clean_failure(relogin(os_site, os_user, project), 1, "HTTP 201", "not valid JSON")
    assert state(os_site) == os_logged_in


def test_keystone_oversized_json(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.respond("POST", TOKENS, 201, OVERSIZED_JSON, "application/json")
    assert_clean_failure(relogin(os_site, os_user, project), 1, "HTTP 201")
    assert state(os_site) == os_logged_in


def test_keystone_oversized_json_is_described_truthfully(os_site, os_user, project, keystone_proxy, os_logged_in):
    keystone_proxy.respond("POST", TOKENS, 201, OVERSIZED_JSON, "application/json")
    line = assert_clean_failure(relogin(os_site, os_user, project), 1, "HTTP 201")
    assert state(os_site) == os_logged_in
    assert "not valid JSON" not in line


def test_keystone_503_on_creating_the_application_credential_is_not_retried(
        os_site, os_user, project, keystone_proxy, os_logged_in):
    # A POST that creates something is not idempotent: one try, then a clear error.
    keystone_proxy.respond("POST", r"/v3/users/[^/]+/application_credentials", 503, HTML_503)
    assert_clean_failure(relogin(os_site, os_user, project), 1, "HTTP 503", "application credential")
    assert sum(1 for s in keystone_proxy.seen if s.path.endswith("/application_credentials")) == 1
    assert state(os_site) == os_logged_in


def test_keystone_idempotent_get_is_retried(os_site, os_user, keystone_proxy):
    keystone_proxy.respond("GET", r"/v3/auth/projects", 503, HTML_503, times=2)
    result = os_site.run("kubectl-openstack", "projects", "--user", os_user, "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert keystone_proxy.count("GET", "/v3/auth/projects") == 3


# -- get-token renewal of a logged-in context


def test_get_token_when_keystone_went_away(os_site, keystone_proxy, os_expired):
    keystone_proxy.stop()
    result = os_site.run("kubectl-openstack", *exec_args(os_site))
    assert_clean_failure(result, 4, "cannot reach Keystone")
    assert state(os_site) == os_expired


def test_get_token_503_always_fails_after_three_tries(os_site, keystone_proxy, os_expired):
    keystone_proxy.respond("POST", TOKENS, 503, HTML_503)
    result = os_site.run("kubectl-openstack", *exec_args(os_site))
    assert_clean_failure(result, 1, "HTTP 503")
    assert keystone_proxy.count("POST", TOKENS) == 3
    assert state(os_site) == os_expired


def test_get_token_transient_503_twice_then_renews(os_site, keystone_proxy, os_expired):
    keystone_proxy.respond("POST", TOKENS, 503, HTML_503, times=2)
    result = os_site.run("kubectl-openstack", *exec_args(os_site))
    assert exec_credential(result)["status"]["token"]
    assert keystone_proxy.count("POST", TOKENS) == 3
    assert state(os_site) != os_expired  # the renewed token was cached


def test_get_token_4xx_with_html_body(os_site, keystone_proxy, os_expired):
    keystone_proxy.respond("POST", TOKENS, 403, HTML_403)
    assert_clean_failure(os_site.run("kubectl-openstack", *exec_args(os_site)), 1, "HTTP 403")
    assert keystone_proxy.count("POST", TOKENS) == 1
    assert state(os_site) == os_expired


def test_get_token_read_timeout_is_bounded(os_site, keystone_proxy, os_expired):
    keystone_proxy.hang("POST", TOKENS)
    result, elapsed = timed(lambda: os_site.run("kubectl-openstack", *exec_args(os_site), env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert state(os_site) == os_expired


# ---------------------------------------------------------------------------------------------
# OpenID provider


def test_oidc_connection_refused(iam_site, oidc_proxy, iam_logged_in):
    url = oidc_proxy.url
    oidc_proxy.stop()
    line = assert_clean_failure(iam_relogin(iam_site, url, iam_logged_in), 4, "cannot reach the OIDC provider", url)
    assert line.startswith("kubectl-iam: error:")
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_tls_handshake_failure(iam_site, iam_logged_in):
    with GarbageTLSServer() as garbage:
        result = iam_relogin(iam_site, garbage.url, iam_logged_in)
    assert_clean_failure(result, 4, "TLS", garbage.url)
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_tls_handshake_failure_is_not_blamed_on_the_ca(iam_site, iam_logged_in):
    with GarbageTLSServer() as garbage:
        result = iam_relogin(iam_site, garbage.url, iam_logged_in)
    line = assert_clean_failure(result, 4, "TLS")
    assert state(iam_site) == iam_logged_in["state"]
    assert "verification" not in line and "--cacert" not in line


def test_oidc_untrusted_certificate(iam_site, oidc_proxy, iam_logged_in, tmp_path):
    other = make_pki(tmp_path / "other", name="untrusted")
    oidc_proxy.use_certificate(other.server_cert, other.server_key)
    assert_clean_failure(iam_relogin(iam_site, oidc_proxy.url, iam_logged_in), 4, "TLS verification", "--cacert")
    assert state(iam_site) == iam_logged_in["state"]


@pytest.mark.parametrize("path,method", [(DISCOVERY, "GET"), (DEVICE_AUTH, "POST")], ids=["discovery", "device-auth"])
def test_oidc_read_timeout_is_bounded(iam_site, oidc_proxy, iam_logged_in, path, method):
    oidc_proxy.hang(method, path)
    result, elapsed = timed(lambda: iam_relogin(iam_site, oidc_proxy.url, iam_logged_in, env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert oidc_proxy.count(method, path) == 1
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_tls_handshake_timeout_is_bounded(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.stall_tls()
    result, elapsed = timed(lambda: iam_relogin(iam_site, oidc_proxy.url, iam_logged_in, env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_connect_timeout_is_bounded(iam_site, iam_logged_in):
    with ConnectBlackHole() as hole:
        result, elapsed = timed(lambda: iam_relogin(iam_site, hole.url, iam_logged_in, env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time", hole.url)
    assert elapsed < BOUND
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_retries_share_one_time_budget(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.respond("GET", DISCOVERY, 503, HTML_503, times=1)
    oidc_proxy.hang("GET", DISCOVERY)
    result, elapsed = timed(lambda: iam_relogin(iam_site, oidc_proxy.url, iam_logged_in,
                                                env={"KUBECTL_CAAS_TIMEOUT": "4"}))
    assert_clean_failure(result, 4, "did not answer in time")
    assert oidc_proxy.count("GET", DISCOVERY) == 2
    assert elapsed < 10  # 4 s in all plus start-up; a fresh 4 s per try would take over 9.5 s
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_connection_closed_without_answer(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.close_connection("POST", DEVICE_AUTH)
    assert_clean_failure(iam_relogin(iam_site, oidc_proxy.url, iam_logged_in), 4, "cannot reach the OIDC provider")
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_discovery_503_always_fails_after_three_tries(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.respond("GET", DISCOVERY, 503, HTML_503)
    assert_clean_failure(iam_relogin(iam_site, oidc_proxy.url, iam_logged_in), 1, "HTTP 503")
    assert oidc_proxy.count("GET", DISCOVERY) == 3
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_device_authorization_503_always_fails_after_three_tries(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.respond("POST", DEVICE_AUTH, 503, HTML_503)
    assert_clean_failure(iam_relogin(iam_site, oidc_proxy.url, iam_logged_in), 1, "HTTP 503")
    assert oidc_proxy.count("POST", DEVICE_AUTH) == 3
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_device_authorization_503_twice_then_the_login_goes_on(iam_site, oidc_proxy, provider, iam_logged_in):
    oidc_proxy.respond("POST", DEVICE_AUTH, 503, HTML_503, times=2)
    # The third try gets a real code; its poll is then told the code expired, which ends the login
    # at once (no person approves it).
    oidc_proxy.respond("POST", TOKEN, 400, '{"error": "expired_token"}', "application/json")
    result = iam_site.run("kubectl-iam", "login", "--no-browser", "--force", "--context", iam_logged_in["context"],
                          env={"IAM_ISSUER": oidc_proxy.url}, timeout=90)
    assert oidc_proxy.count("POST", DEVICE_AUTH) == 3
    assert "To sign in, open" in result.stderr  # the third try got a code
    assert result.returncode == 3 and "the code expired" in result.stderr.splitlines()[-1]
    assert state(iam_site) == iam_logged_in["state"]


@pytest.mark.parametrize("method,path,status,needles", [
    ("GET", DISCOVERY, 404, ("HTTP 404", "discovery")),
    ("GET", DISCOVERY, 200, ("HTTP 200", "not JSON")),  # a captive portal's page
    ("POST", DEVICE_AUTH, 400, ("HTTP 400", "not JSON")),
], ids=["discovery-404", "discovery-200", "device-auth-400"])
def test_oidc_html_body(iam_site, oidc_proxy, iam_logged_in, method, path, status, needles):
    oidc_proxy.respond(method, path, status, HTML_403.replace("403 Forbidden", f"{status} Something"))
    assert_clean_failure(iam_relogin(iam_site, oidc_proxy.url, iam_logged_in), 1, *needles)
    assert oidc_proxy.count(method, path) == 1  # not transient: no retry
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_malformed_json(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.respond("POST", DEVICE_AUTH, 200, '{"device_code": "abc", "user_code": ', "application/json")
    assert_clean_failure(iam_relogin(iam_site, oidc_proxy.url, iam_logged_in), 1, "HTTP 200", "not JSON")
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_oversized_json(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.respond("POST", DEVICE_AUTH, 200, OVERSIZED_JSON, "application/json")
    assert_clean_failure(iam_relogin(iam_site, oidc_proxy.url, iam_logged_in), 1, "HTTP 200", "oversized")
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_token_endpoint_503_during_the_poll(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.respond("POST", TOKEN, 503, HTML_503)
    result = iam_relogin(iam_site, oidc_proxy.url, iam_logged_in)
    # The code must be shown before the first poll, so here stderr is the device-code prompt and
    # then exactly one error line.
    assert "Traceback" not in result.stderr and result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("To sign in, open ")
    errors = [line for line in lines if line.startswith("kubectl-iam: error:")]
    assert errors == [lines[-1]] and "HTTP 503" in lines[-1] and "device code poll" in lines[-1]
    assert all(line.startswith(("To sign in", "or open", "(the code is valid")) for line in lines[:-1])
    assert oidc_proxy.count("POST", TOKEN) == 3
    assert state(iam_site) == iam_logged_in["state"]


# -- get-token refresh through the proxy


def test_oidc_refresh_transient_503_twice_then_renews(iam_site, oidc_proxy, iam_expired):
    oidc_proxy.respond("POST", TOKEN, 503, HTML_503, times=2)
    result = iam_site.run("kubectl-iam", *exec_args(iam_site))
    assert exec_credential(result)["status"]["token"]
    assert oidc_proxy.count("POST", TOKEN) == 3
    assert state(iam_site) != iam_expired


def test_oidc_refresh_503_always_fails_after_three_tries(iam_site, oidc_proxy, iam_expired):
    oidc_proxy.respond("POST", TOKEN, 503, HTML_503)
    assert_clean_failure(iam_site.run("kubectl-iam", *exec_args(iam_site)), 1, "HTTP 503", "token refresh")
    assert oidc_proxy.count("POST", TOKEN) == 3
    assert state(iam_site) == iam_expired


def test_oidc_refresh_when_the_provider_went_away(iam_site, oidc_proxy, iam_expired):
    oidc_proxy.stop()
    assert_clean_failure(iam_site.run("kubectl-iam", *exec_args(iam_site)), 4, "cannot reach the OIDC provider")
    assert state(iam_site) == iam_expired


def test_oidc_refresh_read_timeout_is_bounded(iam_site, oidc_proxy, iam_expired):
    oidc_proxy.hang("POST", TOKEN)
    result, elapsed = timed(lambda: iam_site.run("kubectl-iam", *exec_args(iam_site), env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert state(iam_site) == iam_expired


def test_oidc_refresh_malformed_json(iam_site, oidc_proxy, iam_expired):
    oidc_proxy.respond("POST", TOKEN, 200, '{"access_token": "abc", ', "application/json")
    assert_clean_failure(iam_site.run("kubectl-iam", *exec_args(iam_site)), 1, "HTTP 200", "not JSON")
    assert state(iam_site) == iam_expired


def test_fault_proxy_rewrites_discovery_to_itself(oidc_proxy, provider):
    import requests

    session = requests.Session()
    session.trust_env = False  # the CA below is the only one that counts
    document = session.get(oidc_proxy.url + DISCOVERY, verify=str(provider.ca_cert), timeout=10).json()
    assert document["issuer"] == oidc_proxy.url + "/"  # IAM's trailing slash, kept
    assert document["token_endpoint"] == oidc_proxy.url + TOKEN
    assert provider.issuer.rstrip("/") not in json.dumps(document)

