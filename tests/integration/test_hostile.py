"""Hostile or broken servers: what kubectl-openstack and kubectl-iam promise when Keystone or the
OpenID provider redirects, trickles, floods, nests, lies about who a token is for, or puts
terminal escapes in the strings it sends.

Every test drives the installed plugins against the real Keystone and the real OpenID provider,
through a FaultProxy (tests/servers/faults.py) that misbehaves in one scripted way; see
hostile_fixtures.py for the set-up. A redirect points at a Recorder (tests/servers/hostile.py):
one served with the certificate the plugin trusts, so that if the plugin followed the redirect
it would complete the handshake and send its request there, and one speaking plain HTTP.

The promises, one group each below:
1. no request is repeated at a redirect's target, so no secret follows it;
2. a server that trickles its answer cannot hold a command past its time budget;
3. an answer larger than any real one is refused without being read into memory;
4. a malformed answer ends in one line, not a traceback;
5. a Keystone token for another user or project than asked for is refused;
6. strings a server chose reach the terminal escaped, and a URL a server chose is opened only
   when it is https, in a browser that does not inherit our secrets.
A failure always leaves the kubeconfig and the token cache as they were (`state`).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest

from tests.integration import hostile_fixtures as shared
from tests.integration.harness import BIN, Workspace, exec_credential
from tests.integration.hostile_fixtures import (
    BOUND,
    DEVICE_AUTH,
    DISCOVERY,
    PASSWORD,
    SHORT_BUDGET,
    TOKEN,
    TOKENS,
    age_cached_token,
    assert_clean_failure,
    exec_args,
    iam_relogin,
    relogin,
    run_with_person,
    state,
    timed,
)
from tests.servers.browser_standin import approve_device_code
from tests.servers.faults import FaultProxy
from tests.servers.hostile import FORGED_LINE, Recorder, control_chars_sample, deep_json, unsafe_characters

# The shared fixtures (tests/integration/hostile_fixtures.py), visible to this module's tests.
project, keystone_proxy, os_user, os_site, os_logged_in, os_expired = (
    shared.project, shared.keystone_proxy, shared.os_user, shared.os_site, shared.os_logged_in, shared.os_expired)
provider, oidc_proxy, iam_site, iam_logged_in, iam_expired = (
    shared.provider, shared.oidc_proxy, shared.iam_site, shared.iam_logged_in, shared.iam_expired)

PROJECTS = "/v3/auth/projects"
# At one byte a second this body takes minutes: only the time budget can end the request.
SLOW_BODY = b'{"padding": "' + b"x" * 300 + b'"}'
HUGE = 3 << 29  # 1.5 GiB, announced in Content-Length and made up as it is read
PEAK_RSS_LIMIT = 200 << 20
# What kubectl sets when a person is at the terminal: get-token may then sign in again itself.
INTERACTIVE = json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                          "spec": {"interactive": True}})
# Secrets the plugins read from the environment, with values to look for in the browser's.
SECRET_ENV = {"OS_PASSWORD": "os-password-must-stay", "OS_APPLICATION_CREDENTIAL_SECRET": "app-cred-secret-must-stay"}
CLIENT_SECRET = "client-secret-must-stay"
PROMPT_PREFIXES = ("To sign in, open ", "or open ", "(the code is valid", "(opened it in your browser)")


# ---------------------------------------------------------------------------------------------
# Helpers


def cached_entry(workspace: Workspace) -> Dict[str, Any]:
    (path,) = workspace.cache.glob("*.json")
    return json.loads(path.read_text())


def assert_reached_nothing(other: Recorder, *secrets: str) -> None:
    """The redirect's target saw none of the secrets, and in fact no connection at all."""
    assert [secret for secret in secrets if other.saw(secret)] == []
    assert other.requests == [] and other.connections == 0, other.requests


def created_nothing(proxy: FaultProxy) -> bool:
    """No application credential was created through the proxy (login refused before remembering)."""
    return not any(seen.path.endswith("/application_credentials") for seen in proxy.seen)


def assert_poll_failure(result: subprocess.CompletedProcess, exit_code: int, *needles: str) -> str:
    """A failure after the device code was shown: the prompt lines, then exactly one error line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == exit_code, f"exit {result.returncode}, stderr: {result.stderr}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith(PROMPT_PREFIXES[0]), result.stderr
    assert all(line.startswith(PROMPT_PREFIXES) for line in lines[:-1]), result.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def run_bounded(run: Callable[[], subprocess.CompletedProcess]) -> Tuple[subprocess.CompletedProcess, float]:
    """`timed`, failing the test plainly when the command outlives twice the bound."""
    try:
        return timed(run)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"still running after {exc.timeout} s: {exc.cmd}")


# A wrapper around one plugin command that reports the largest resident set any of its children
# reached (Linux counts ru_maxrss in KiB); the plugin is its only child.
MEASURE_PEAK = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measuring_peak(workspace: Workspace, report: Path, *argv: str, input: str = "",
                       env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.CompletedProcess, float, int]:
    """Run a plugin command as Workspace.run does; also return the time it took and its peak RSS in bytes."""
    command = [sys.executable, "-c", MEASURE_PEAK, str(report), str(BIN / argv[0]), *argv[1:]]
    started = time.monotonic()
    result = subprocess.run(command, input=input, capture_output=True, text=True, env={**workspace.env, **(env or {})},
                            timeout=2 * BOUND, cwd=workspace.home)
    return result, time.monotonic() - started, int(report.read_text())


@dataclass
class Attempt:
    """One Keystone operation that talks to the proxy: a password login again (`login`) or get-token
    renewing an expired token with the remembered application credential (`get-token`)."""

    kind: str
    workspace: Workspace
    run: Callable[..., subprocess.CompletedProcess]
    before: Dict[str, bytes]  # the kubeconfig and cache before it

    def unchanged(self) -> bool:
        return state(self.workspace) == self.before


@pytest.fixture(params=["login", "get-token"])
def keystone_attempt(request, os_site, os_user, project, keystone_proxy, os_logged_in) -> Attempt:
    if request.param == "login":
        return Attempt("login", os_site, lambda env=None: relogin(os_site, os_user, project, env=env), os_logged_in)
    age_cached_token(os_site, "keystone")
    args = exec_args(os_site)
    return Attempt("get-token", os_site,
                   lambda env=None: os_site.run("kubectl-openstack", *args, env=env, timeout=2 * BOUND), state(os_site))


def refresh(workspace: Workspace, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """get-token for the one kubectl-iam context, without a person (so it may only refresh)."""
    return workspace.run("kubectl-iam", *exec_args(workspace), env=env, timeout=2 * BOUND)


# ---------------------------------------------------------------------------------------------
# 1. No secret follows a redirect


@pytest.mark.parametrize("status", [307, 308, 302])
def test_keystone_login_redirect_is_refused_and_the_password_stays_here(
        os_site, os_user, project, keystone_proxy, os_logged_in, pki, status):
    with Recorder(pki.server_cert, pki.server_key) as other:
        keystone_proxy.redirect("POST", TOKENS, other.url_for, status=status)
        result = relogin(os_site, os_user, project)
        assert_reached_nothing(other, PASSWORD)
    line = assert_clean_failure(result, 4)
    # Location is the same path at the other host, so the suggested auth URL is that host's /v3.
    assert line == (f"kubectl-openstack: error: Keystone at {keystone_proxy.url}/v3 redirects to "
                    f"{other.url}{TOKENS}?nocatalog (HTTP {status}); use --auth-url {other.url}/v3")
    assert keystone_proxy.count("POST", TOKENS) == 1
    assert state(os_site) == os_logged_in


def test_keystone_login_redirect_to_plain_http_is_refused(os_site, os_user, project, keystone_proxy, os_logged_in):
    with Recorder() as plain:
        keystone_proxy.redirect("POST", TOKENS, plain.url_for)
        result = relogin(os_site, os_user, project)
        assert_reached_nothing(plain, PASSWORD)
    assert_clean_failure(result, 4, f"Keystone at {keystone_proxy.url}/v3 redirects to {plain.url}{TOKENS}?nocatalog "
                         "(HTTP 307)")
    assert state(os_site) == os_logged_in


def test_keystone_login_redirect_with_a_relative_location_names_the_new_url(
        os_site, os_user, project, keystone_proxy, os_logged_in):
    # Keystone moved below a path prefix on the same host: the hint is the prefixed /v3.
    keystone_proxy.redirect("POST", TOKENS, "/identity/v3/auth/tokens")
    line = assert_clean_failure(relogin(os_site, os_user, project), 4)
    assert line.endswith(f"redirects to {keystone_proxy.url}/identity/v3/auth/tokens (HTTP 307); "
                         f"use --auth-url {keystone_proxy.url}/identity/v3"), line
    assert [s.path for s in keystone_proxy.seen] == [TOKENS]  # the new address was not tried
    assert state(os_site) == os_logged_in


def test_get_token_redirect_keeps_the_application_credential_secret(os_site, keystone_proxy, os_expired, pki):
    secret = cached_entry(os_site)["application_credential"]["secret"]
    with Recorder(pki.server_cert, pki.server_key) as other:
        keystone_proxy.redirect("POST", TOKENS, other.url_for)
        # A password in the environment would be the next renewal source: it must not be tried either.
        result = os_site.run("kubectl-openstack", *exec_args(os_site), env={"OS_PASSWORD": PASSWORD})
        assert_reached_nothing(other, secret, PASSWORD)
    line = assert_clean_failure(result, 4)
    assert line == (f"kubectl-openstack: error: Keystone at {keystone_proxy.url}/v3 redirects to "
                    f"{other.url}{TOKENS}?nocatalog (HTTP 307); use --auth-url {other.url}/v3")
    assert keystone_proxy.count("POST", TOKENS) == 1
    assert state(os_site) == os_expired


def test_logout_redirect_keeps_the_token_and_still_forgets_it(os_site, keystone_proxy, os_logged_in, pki):
    token = cached_entry(os_site)["tokens"]["keystone"]["value"]
    context = os_site.config()["current-context"]
    kubeconfig = os_site.kubeconfig.read_bytes()
    with Recorder(pki.server_cert, pki.server_key) as other:
        keystone_proxy.redirect("DELETE", TOKENS, other.url_for)
        result = os_site.run("kubectl-openstack", "logout")
        assert_reached_nothing(other, token)
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.returncode == 4, result.stderr
    lines = result.stderr.splitlines()
    # It says why the token stays valid, forgets the application credential (no password to
    # delete it with), removes the entry, and ends with the error line.
    assert lines[0].startswith(f"{context}: could not revoke the token (Keystone at {keystone_proxy.url}/v3 "
                               f"redirects to {other.url}{TOKENS} (HTTP 307); use --auth-url {other.url}/v3)"), lines
    assert lines[1].startswith(f"{context}: forgot application credential "), lines
    assert lines[2] == f"{context}: logged out (cache entry removed)", lines
    assert len(lines) == 4 and lines[3].startswith("kubectl-openstack: error: "), lines
    assert list(os_site.cache.glob("*.json")) == []
    assert os_site.kubeconfig.read_bytes() == kubeconfig


def test_logout_with_a_password_still_forgets_the_entry_when_revocation_redirects(
        os_site, keystone_proxy, os_logged_in, pki):
    token = cached_entry(os_site)["tokens"]["keystone"]["value"]
    context = os_site.config()["current-context"]
    with Recorder(pki.server_cert, pki.server_key) as other:
        keystone_proxy.redirect("DELETE", TOKENS, other.url_for)
        result = os_site.run("kubectl-openstack", "logout", "--password-stdin", input=PASSWORD + "\n")
        assert_reached_nothing(other, token, PASSWORD)
    assert "Traceback" not in result.stderr and result.returncode == 4, result.stderr
    assert list(os_site.cache.glob("*.json")) == [], result.stderr
    lines = result.stderr.splitlines()
    # The password deleted the application credential; only the unscoped token's revocation was redirected.
    assert any(line.startswith(f"{context}: application credential ") and line.endswith(" deleted") for line in lines)
    assert lines[-2] == f"{context}: logged out (cache entry removed)", lines


def test_oidc_refresh_redirect_keeps_the_refresh_token(iam_site, oidc_proxy, iam_expired, oidc_pki):
    refresh_token = cached_entry(iam_site)["refresh_token"]
    with Recorder(oidc_pki.server_cert, oidc_pki.server_key) as other:
        oidc_proxy.redirect("POST", TOKEN, other.url_for)
        result = refresh(iam_site)
        assert_reached_nothing(other, refresh_token)
    # The cached endpoints are the proxy's but the issuer is the provider's: no path to line up,
    # so the line names the new location and no more.
    line = assert_clean_failure(result, 4, f"redirects to {other.url}{TOKEN} (HTTP 307)")
    assert line.startswith("kubectl-iam: error: the OIDC provider at ")
    assert oidc_proxy.count("POST", TOKEN) == 1
    assert state(iam_site) == iam_expired


def test_oidc_device_poll_redirect_keeps_the_device_code(iam_site, oidc_proxy, iam_logged_in, oidc_pki):
    device_codes: List[str] = []

    def note_device_code(status, headers, body):
        device_codes.append(body["device_code"])
        return status, headers, body

    oidc_proxy.rewrite_json("POST", DEVICE_AUTH, note_device_code)
    with Recorder(oidc_pki.server_cert, oidc_pki.server_key) as other:
        oidc_proxy.redirect("POST", TOKEN, other.url_for)
        result = iam_relogin(iam_site, oidc_proxy.url, iam_logged_in)
        assert len(device_codes) == 1
        assert_reached_nothing(other, device_codes[0])
    line = assert_poll_failure(result, 4)
    # The issuer is the proxy here, and the token endpoint lies below it: the hint is the new origin.
    assert line == (f"kubectl-iam: error: the OIDC provider at {oidc_proxy.url} redirects to {other.url}{TOKEN} "
                    f"(HTTP 307); use --issuer {other.url}")
    assert state(iam_site) == iam_logged_in["state"]


def test_oidc_revocation_redirect_at_logout_keeps_the_refresh_token(iam_site, oidc_proxy, iam_expired, oidc_pki):
    entry = cached_entry(iam_site)
    revocation = urlsplit(entry["metadata"]["revocation_endpoint"])
    assert revocation.netloc == urlsplit(oidc_proxy.url).netloc  # iam_expired routed it through the proxy
    context = iam_site.config()["current-context"]
    with Recorder(oidc_pki.server_cert, oidc_pki.server_key) as other:
        oidc_proxy.redirect("POST", revocation.path, other.url_for)
        result = iam_site.run("kubectl-iam", "logout")
        assert_reached_nothing(other, entry["refresh_token"])
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{context}: could not revoke the refresh token: the OIDC provider at "), lines
    assert f"redirects to {other.url}{revocation.path} (HTTP 307)" in lines[0]
    assert lines[1] == f"{context}: logged out (cache entry removed)", lines
    assert len(lines) == 3 and lines[2].startswith("kubectl-iam: error: "), lines
    assert list(iam_site.cache.glob("*.json")) == []
    assert oidc_proxy.count("POST", revocation.path) == 1


def test_oidc_discovery_redirect_to_plain_http_is_refused(iam_site, oidc_proxy, iam_logged_in):
    with Recorder() as plain:
        oidc_proxy.redirect("GET", DISCOVERY, plain.url_for)
        result = iam_relogin(iam_site, oidc_proxy.url, iam_logged_in)
        assert_reached_nothing(plain)
    line = assert_clean_failure(result, 4)
    assert line.startswith(f"kubectl-iam: error: the OIDC provider at {oidc_proxy.url} redirects to "
                           f"{plain.url}{DISCOVERY} (HTTP 307)"), line
    assert [s.path for s in oidc_proxy.seen] == [DISCOVERY]
    assert state(iam_site) == iam_logged_in["state"]


# ---------------------------------------------------------------------------------------------
# 2. A trickling answer cannot outlast the time budget


@pytest.mark.parametrize("head,framing", [(False, "length"), (False, "chunked"), (True, "length")],
                         ids=["body", "chunked-body", "head"])
def test_keystone_trickle_is_cut_at_the_time_budget(keystone_proxy, keystone_attempt, head, framing):
    keystone_proxy.trickle("POST", TOKENS, body=SLOW_BODY, status=201, head=head, framing=framing)
    result, elapsed = run_bounded(lambda: keystone_attempt.run(env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert keystone_proxy.count("POST", TOKENS) == 1
    assert keystone_attempt.unchanged()


@pytest.mark.parametrize("head", [False, True], ids=["body", "head"])
def test_oidc_refresh_trickle_is_cut_at_the_time_budget(iam_site, oidc_proxy, iam_expired, head):
    oidc_proxy.trickle("POST", TOKEN, body=SLOW_BODY, head=head)
    result, elapsed = run_bounded(lambda: refresh(iam_site, env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert state(iam_site) == iam_expired


def test_oidc_login_discovery_trickle_is_cut_at_the_time_budget(iam_site, oidc_proxy, iam_logged_in):
    oidc_proxy.trickle("GET", DISCOVERY, body=SLOW_BODY)
    result, elapsed = run_bounded(lambda: iam_relogin(iam_site, oidc_proxy.url, iam_logged_in, env=SHORT_BUDGET))
    assert_clean_failure(result, 4, "did not answer in time")
    assert elapsed < BOUND
    assert state(iam_site) == iam_logged_in["state"]


# ---------------------------------------------------------------------------------------------
# 3. A huge answer is refused unread


def test_keystone_huge_answer_is_refused_without_reading_it(os_site, os_user, project, keystone_proxy, os_logged_in,
                                                            tmp_path):
    keystone_proxy.huge("POST", TOKENS, HUGE, status=201)
    result, elapsed, peak = run_measuring_peak(
        os_site, tmp_path / "peak", "kubectl-openstack", "login", "--user", os_user, "--project", project[0],
        "--password-stdin", "--force", input=PASSWORD + "\n")
    assert_clean_failure(result, 1, "Keystone answered HTTP 201", "oversized")
    assert elapsed < BOUND
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"
    assert state(os_site) == os_logged_in


def test_oidc_huge_token_answer_is_refused_without_reading_it(iam_site, oidc_proxy, iam_expired, tmp_path):
    oidc_proxy.huge("POST", TOKEN, HUGE)
    result, elapsed, peak = run_measuring_peak(iam_site, tmp_path / "peak", "kubectl-iam", *exec_args(iam_site))
    assert_clean_failure(result, 1, "the OIDC provider answered HTTP 200", "oversized")
    assert elapsed < BOUND
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"
    assert state(iam_site) == iam_expired


# ---------------------------------------------------------------------------------------------
# 4. Malformed answers end in one line


def drop_subject_token(status, headers, body):
    return status, [(name, value) for name, value in headers if name.lower() != "x-subject-token"], body


def test_keystone_answer_without_a_subject_token(keystone_proxy, keystone_attempt):
    keystone_proxy.rewrite_json("POST", TOKENS, drop_subject_token)
    line = assert_clean_failure(keystone_attempt.run(), 1, "not a token")
    assert line.startswith("kubectl-openstack: error: Keystone answered "), line  # handled, not "unexpected"
    assert keystone_attempt.unchanged()


def test_keystone_made_up_token_body_without_a_subject_token(os_site, os_user, project, keystone_proxy, os_logged_in):
    body = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                      "issued_at": "2020-01-01T00:00:00.000000Z", "user": {"id": "u1", "name": os_user}}}
    keystone_proxy.respond("POST", TOKENS, 201, json.dumps(body), "application/json",
                           headers=[("X-Openstack-Request-Id", "req-hostile")])
    line = assert_clean_failure(relogin(os_site, os_user, project), 1, "not a token")
    assert line.startswith("kubectl-openstack: error: Keystone answered "), line
    assert state(os_site) == os_logged_in


def test_keystone_answer_nested_too_deep(keystone_proxy, keystone_attempt):
    keystone_proxy.respond("POST", TOKENS, 201, deep_json(100_000), "application/json",
                           headers=[("X-Subject-Token", "gAAAAA-made-up")])
    line = assert_clean_failure(keystone_attempt.run(), 1)
    assert line.startswith("kubectl-openstack: error: Keystone answered "), line  # handled, not "unexpected"
    assert keystone_attempt.unchanged()


@pytest.mark.parametrize("container", ["object", "array"])
def test_oidc_token_answer_nested_too_deep(iam_site, oidc_proxy, iam_expired, container):
    oidc_proxy.respond("POST", TOKEN, 200, deep_json(100_000, container), "application/json")
    assert_clean_failure(refresh(iam_site), 1, "HTTP 200", "not JSON")
    assert state(iam_site) == iam_expired


# ---------------------------------------------------------------------------------------------
# 5. A token for someone else is refused


def test_keystone_token_for_another_project_is_refused(project, keystone_proxy, keystone_attempt):
    def other_project(status, headers, body):
        body["token"]["project"].update(name="Intruders", id="f" * 32)
        return status, headers, body

    keystone_proxy.rewrite_json("POST", TOKENS, other_project)
    line = assert_clean_failure(keystone_attempt.run(), 3, "Intruders", project[0])
    assert "f" * 32 in line
    assert created_nothing(keystone_proxy)
    assert keystone_attempt.unchanged()


def test_keystone_token_for_no_project_is_refused(project, keystone_proxy, keystone_attempt):
    # An unscoped token where a project-scoped one was asked for is a token for another project too.
    def unscoped(status, headers, body):
        del body["token"]["project"]
        body["token"].pop("roles", None)
        return status, headers, body

    keystone_proxy.rewrite_json("POST", TOKENS, unscoped)
    assert_clean_failure(keystone_attempt.run(), 3, project[0])
    assert created_nothing(keystone_proxy)
    assert keystone_attempt.unchanged()


def test_keystone_token_for_another_user_is_refused(os_user, keystone_proxy, keystone_attempt):
    def other_user(status, headers, body):
        body["token"]["user"].update(name="mallory", id="e" * 32)
        return status, headers, body

    keystone_proxy.rewrite_json("POST", TOKENS, other_user)
    assert_clean_failure(keystone_attempt.run(), 3, "user mallory", os_user)
    assert created_nothing(keystone_proxy)
    assert keystone_attempt.unchanged()


# ---------------------------------------------------------------------------------------------
# 6. Server strings are data


def test_keystone_project_names_are_shown_escaped(os_site, os_user, project, keystone_proxy):
    hostile = control_chars_sample()

    def rename(status, headers, body):
        mine = body["projects"][0]
        body["projects"] = [{**mine, "name": hostile}, {**mine, "name": "Zeta" + hostile, "id": hostile}]
        return status, headers, body

    keystone_proxy.rewrite_json("GET", PROJECTS, rename)
    result = os_site.run("kubectl-openstack", "projects", "--user", os_user, "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert unsafe_characters(result.stdout, allow="\n") == []
    assert unsafe_characters(result.stderr, allow="\n") == []
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and FORGED_LINE not in lines, lines  # the newline in the name forged no line
    assert lines[0].startswith("alice\\x1b[31mRED\\x1b[0m\\x1b]52;c;") and "\\u202egnp.exe" in lines[0], lines
    assert lines[1].endswith("\t" + lines[0].split("\t")[0]), lines  # the made-up id, escaped the same way
    assert keystone_proxy.count("GET", PROJECTS) == 1


def test_oidc_error_description_is_shown_escaped(iam_site, oidc_proxy, iam_expired):
    hostile = control_chars_sample()
    answer = json.dumps({"error": "invalid_request", "error_description": hostile}, ensure_ascii=False)
    oidc_proxy.respond("POST", TOKEN, 400, answer, "application/json")
    line = assert_clean_failure(refresh(iam_site), 1, "invalid_request", "alice\\x1b[31mRED\\x1b[0m", "\\u202e")
    assert unsafe_characters(line) == []
    assert state(iam_site) == iam_expired


def test_oidc_user_code_with_control_characters_is_refused(iam_site, oidc_proxy, iam_logged_in, browser):
    oidc_proxy.rewrite_json("POST", DEVICE_AUTH, lambda status, headers, body: (
        status, headers, {**body, "user_code": control_chars_sample()}))
    result = iam_relogin(iam_site, oidc_proxy.url, iam_logged_in, env=browser.env)
    line = assert_clean_failure(result, 1, "user code")
    assert unsafe_characters(line) == []
    assert oidc_proxy.count("POST", TOKEN) == 0  # never polled
    assert browser.calls() == []
    assert state(iam_site) == iam_logged_in["state"]


@pytest.mark.parametrize("uri", ["javascript:alert(1)", "-oProxyCommand=sh", "file:///etc/passwd"])
def test_oidc_verification_uri_that_is_not_https_is_refused(iam_site, oidc_proxy, iam_logged_in, browser, uri):
    oidc_proxy.rewrite_json("POST", DEVICE_AUTH, lambda status, headers, body: (
        status, headers, {**body, "verification_uri": uri, "verification_uri_complete": uri}))
    result = iam_site.run("kubectl-iam", "login", "--force", "--context", iam_logged_in["context"],
                          env={"IAM_ISSUER": oidc_proxy.url, **browser.env}, timeout=2 * BOUND)
    assert_clean_failure(result, 1, "verification URI", "not an https:// URL")
    assert browser.calls() == []
    assert oidc_proxy.count("POST", TOKEN) == 0
    assert state(iam_site) == iam_logged_in["state"]


HOSTILE_COMPLETE_URIS = ["javascript:alert(1)", "--remote-debugging-port=9222", "-https://127.0.0.1/device"]


@pytest.mark.parametrize("complete", HOSTILE_COMPLETE_URIS)
def test_oidc_hostile_complete_uri_is_neither_shown_nor_opened(iam_site, oidc_proxy, provider, iam_logged_in,
                                                                browser, complete):
    shown: List[str] = []

    def replace_complete_uri(status, headers, body):
        shown.append(body["verification_uri"])
        return status, headers, {**body, "verification_uri_complete": complete}

    oidc_proxy.rewrite_json("POST", DEVICE_AUTH, replace_complete_uri)
    result = run_with_person(iam_site, ["kubectl-iam", "login", "--force", "--context", iam_logged_in["context"]],
                             approver(provider, oidc_proxy), env={"IAM_ISSUER": oidc_proxy.url, **browser.env})
    assert complete not in result.stdout + result.stderr
    assert not any(line.startswith("or open") for line in result.stderr.splitlines()), result.stderr
    # The browser got the plain verification URI, which is https, and nothing else.
    assert [call["argv"] for call in browser.calls()] == [[shown[0]]]
    # The person approved with the code shown, the poll got the tokens, and the login went on to
    # check the ID token, which names the provider's own issuer, not the proxy it came through.
    line = assert_poll_failure(result, 3, "the ID token's issuer")
    assert "(opened it in your browser)" in result.stderr, line
    assert state(iam_site) == iam_logged_in["state"]


@pytest.mark.parametrize("complete", HOSTILE_COMPLETE_URIS[:2])
def test_oidc_hostile_complete_uri_does_not_stop_a_sign_in(iam_site, oidc_proxy, provider, iam_expired, complete):
    # A person is at the terminal and the refresh token is refused: get-token signs in again.
    oidc_proxy.respond("POST", TOKEN, 400, '{"error": "invalid_grant"}', "application/json", times=1)
    oidc_proxy.rewrite_json("POST", DEVICE_AUTH, lambda status, headers, body: (
        status, headers, {**body, "verification_uri_complete": complete}))
    result = run_with_person(iam_site, ["kubectl-iam", *exec_args(iam_site)], approver(provider, oidc_proxy),
                             env={"KUBERNETES_EXEC_INFO": INTERACTIVE})
    assert exec_credential(result)["status"]["token"]
    assert complete not in result.stderr
    assert not any(line.startswith("or open") for line in result.stderr.splitlines()), result.stderr
    assert oidc_proxy.count("POST", DEVICE_AUTH) == 1
    assert state(iam_site) != iam_expired  # the new sign-in was cached


def test_browser_is_started_without_our_secrets(iam_site, provider, browser):
    """A normal sign-in straight at the provider: its verification_uri_complete is opened, in a
    browser whose environment holds none of the secrets the plugins read."""
    result = run_with_person(iam_site, ["kubectl-iam", "login"], approver(provider),
                             env={**browser.env, **SECRET_ENV, "KUBECTL_CAAS_TEST_TOKEN": "token-must-stay"})
    assert result.returncode == 0, result.stderr
    assert "(opened it in your browser)" in result.stderr
    complete = next(line[len("or open "):] for line in result.stderr.splitlines() if line.startswith("or open "))
    (call,) = browser.calls()
    assert call["argv"] == [complete] and complete.startswith(provider.issuer.rstrip("/") + "/")
    assert call["env"]["DISPLAY"] == ":99"  # the rest of the environment is passed on
    for name in (*SECRET_ENV, "KUBECTL_CAAS_TEST_TOKEN"):
        assert name not in call["env"], name
    dumped = json.dumps(call["env"])
    assert [value for value in SECRET_ENV.values() if value in dumped] == []


def test_browser_is_started_without_the_client_secret(iam_site, oidc_proxy, iam_logged_in, browser):
    # The test provider's client is public, so a login with a client secret cannot succeed there:
    # the proxy answers the device request and the poll itself. What counts is the browser's start.
    device = {"device_code": "made-up-device-code", "user_code": "WDJB-MJHT", "verification_uri": oidc_proxy.url + "/device",
              "expires_in": 600, "interval": 1}
    oidc_proxy.respond("POST", DEVICE_AUTH, 200, json.dumps(device), "application/json")
    oidc_proxy.respond("POST", TOKEN, 400, '{"error": "access_denied"}', "application/json")
    result = iam_site.run("kubectl-iam", "login", "--force", "--context", iam_logged_in["context"],
                          env={"IAM_ISSUER": oidc_proxy.url, "IAM_CLIENT_SECRET": CLIENT_SECRET, **SECRET_ENV,
                               **browser.env}, timeout=2 * BOUND)
    assert_poll_failure(result, 3, "the sign-in was refused")
    (call,) = browser.calls()
    assert call["argv"] == [device["verification_uri"]]
    for name in ("IAM_CLIENT_SECRET", *SECRET_ENV):
        assert name not in call["env"], name
    dumped = json.dumps(call["env"])
    assert [value for value in (CLIENT_SECRET, *SECRET_ENV.values()) if value in dumped] == []
    assert state(iam_site) == iam_logged_in["state"]


# ---------------------------------------------------------------------------------------------
# The person and the browser


def approver(provider, proxy: Optional[FaultProxy] = None) -> Callable[[str, str], None]:
    """The person: opens the verification URI shown (at the provider itself, if it names the proxy)
    and approves the code shown."""
    def approve(uri: str, code: str) -> None:
        if proxy is not None:
            uri = uri.replace(proxy.url, provider.issuer.rstrip("/"))
        approve_device_code(uri, code, login="alice", ca_cert=str(provider.ca_cert))
    return approve


# Stands in for a web browser: records its arguments and environment, then exits.
BROWSER_SCRIPT = """
import json, os, sys, tempfile
handle, path = tempfile.mkstemp(prefix="call-", suffix=".json", dir={calls!r})
with os.fdopen(handle, "w") as out:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, out)
"""


@dataclass
class Browser:
    script: Path
    calls_dir: Path

    @property
    def env(self) -> Dict[str, str]:
        """A desktop session whose browser is this script."""
        return {"DISPLAY": ":99", "BROWSER": str(self.script)}

    def calls(self) -> List[Dict[str, Any]]:
        return [json.loads(path.read_text()) for path in sorted(self.calls_dir.glob("call-*.json"))]


@pytest.fixture
def browser(tmp_path) -> Browser:
    calls = tmp_path / "browser-calls"
    calls.mkdir()
    script = tmp_path / "browser"
    script.write_text(f"#!{sys.executable}\n" + BROWSER_SCRIPT.format(calls=str(calls)))
    script.chmod(0o755)
    return Browser(script, calls)
