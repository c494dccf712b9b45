"""Keystone multi-factor rules (password + TOTP): login asks for the passcode, renewal needs none."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import time

import pytest

from tests.integration.harness import BIN, PASSWORD, exec_credential, run_on_terminal, wait_until

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # base32, 160 bits, as an authenticator app holds it


def totp(secret: str, at: float) -> str:
    """RFC 6238 with Keystone's parameters: HMAC-SHA1, 30 s steps, 6 digits."""
    digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return str((struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000).zfill(6)


@pytest.fixture
def mfa_site(keystone_factory, kube_api_for, workspace):
    methods = "external,password,token,oauth1,mapped,application_credential,totp"
    # One previous 30 s window is accepted too, so a code computed just before a window turns over
    # still works a moment later (the default, 0, would make these tests fail now and then).
    server = keystone_factory(expiration=20, extra_config={"auth": {"methods": methods},
                                                           "totp": {"included_previous_windows": 1}})
    project = server.create_project("CMS")
    user_id = server.create_user("erin", PASSWORD, projects=[project])
    server._admin("POST", "/credentials", json={"credential": {"type": "totp", "user_id": user_id,
                                                               "blob": TOTP_SECRET}})
    server._admin("PATCH", f"/users/{user_id}", json={"user": {"options": {
        "multi_factor_auth_enabled": True, "multi_factor_auth_rules": [["password", "totp"]]}}})
    standin = kube_api_for(server)
    workspace.env.update({"OS_AUTH_URL": server.url, "OS_CACERT": str(server.ca_cert), "CAAS_SERVER": standin.url,
                          "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    return server


def test_password_alone_is_not_enough_and_the_error_says_what_to_do(mfa_site, workspace):
    result = workspace.run("kubectl-openstack", "login", "--user", "erin", "--project", "CMS", "--password-stdin",
                           input=PASSWORD)
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "one-time passcode (TOTP)" in line and "OS_PASSCODE" in line
    assert not workspace.kubeconfig.exists()


INTERACTIVE = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                          "spec": {"interactive": True}})


def test_login_at_a_terminal_asks_for_password_then_passcode(mfa_site, workspace):
    argv = [str(BIN / "kubectl-openstack"), "login", "--user", "erin", "--project", "CMS"]
    code, output, answered = run_on_terminal(argv, workspace.env, {
        "password": PASSWORD, "passcode": totp(TOTP_SECRET, time.time())})
    assert code == 0, output
    assert answered == ["password", "passcode"]  # the password first, then the passcode, each once
    assert [r["auth_methods"] for r in mfa_site.logins()][:2] == [["password"], ["password", "totp"]]
    # Keystone 30 applies the user's MFA rules to application credentials too: login says so and
    # leaves none behind, instead of one that would fail at the first renewal.
    assert "multi-factor rules" in output and "application credentials" in output
    user_id = (next(iter(workspace.cache_entries().values())))["user"]["id"]
    assert mfa_site.list_application_credentials(user_id) == []
    assert workspace.kubectl("get", "pods").returncode == 0


def test_renewal_asks_for_password_and_passcode_at_a_terminal_only(mfa_site, workspace):
    env = {"OS_PASSCODE": totp(TOTP_SECRET, time.time())}
    assert workspace.run("kubectl-openstack", "login", "--user", "erin", "--project", "CMS", "--password-stdin",
                         input=PASSWORD, env=env).returncode == 0
    (entry,) = workspace.cache_entries().values()
    wait_until(entry["tokens"]["keystone"]["expires_at"])
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    background = workspace.run("kubectl-openstack", *args)
    assert background.returncode == 5 and "kubectl openstack login" in background.stderr
    code, output, answered = run_on_terminal(
        [str(BIN / "kubectl-openstack"), *args], {**workspace.env, "KUBERNETES_EXEC_INFO": INTERACTIVE},
        {"password": PASSWORD, "passcode": totp(TOTP_SECRET, time.time())})
    assert code == 0 and answered == ["password", "passcode"], output
    assert json.loads(output[output.index("{"):])["status"]["token"]


def test_passcode_from_the_environment_serves_automation(mfa_site, workspace):
    result = workspace.run("kubectl-openstack", "login", "--user", "erin", "--project", "CMS", "--password-stdin",
                           "--debug", input=PASSWORD, env={"OS_PASSCODE": totp(TOTP_SECRET, time.time())})
    assert result.returncode == 0, result.stderr
    assert '"passcode": "<redacted>"' in result.stderr
    current = totp(TOTP_SECRET, time.time())
    wrong = workspace.run("kubectl-openstack", "login", "--user", "erin", "--project", "CMS", "--password-stdin",
                          input=PASSWORD, env={"OS_PASSCODE": "000000" if current != "000000" else "111111"})
    assert wrong.returncode == 3
    assert "rejected the passcode" in wrong.stderr.strip().splitlines()[-1]
    # get-token in CI: OS_PASSWORD and OS_PASSCODE from the environment
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    for path in workspace.cache.glob("*.json"):
        path.unlink()
    renewed = workspace.run("kubectl-openstack", *args,
                            env={"OS_PASSWORD": PASSWORD, "OS_PASSCODE": totp(TOTP_SECRET, time.time())})
    assert exec_credential(renewed)["status"]["token"]
