"""kubectl-iam's browser sign-in end to end: the real OpenID provider (INDIGO IAM's behaviour), the
plugin opening the authorization URL through Python's webbrowser and the BROWSER variable, a
stand-in for the person's browser there (tests/servers/browser_standin.py: it signs in, consents
and follows the redirect to the plugin's loopback listener), real kubectl, and the Kubernetes-API
stand-in checking the tokens. Once, the browser is real: headless Chromium, driven over its
DevTools protocol (tests/servers/chromium.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.integration.harness import BIN, KUBECTL, run_on_terminal, run_with_person, wait_until
from tests.servers.browser_standin import browser_command

INTERACTIVE = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                          "spec": {"interactive": True}})
NOT_A_DISPLAY = ":97"  # only read to tell a desktop session; nothing is drawn


@pytest.fixture
def browser(workspace, tmp_path):
    """browser(provider, **settings): BROWSER and a desktop in the workspace's environment; the
    stand-in's log (one JSON line per page it was asked to open) is `.opened()`."""
    class Browser:
        log = tmp_path / "browser.jsonl"

        def __call__(self, provider, **settings):
            settings.setdefault("ca_cert", str(provider.ca_cert))
            settings.setdefault("server_cert", str(provider.cert))
            script = browser_command(tmp_path, log=str(self.log), **settings)
            workspace.env.update({"BROWSER": str(script), "DISPLAY": NOT_A_DISPLAY})
            return self

        def opened(self):
            if not self.log.exists():
                return []
            return [json.loads(line) for line in self.log.read_text().splitlines()]
    yield Browser()
    for record in Browser().opened():
        if record.get("lingering_pid"):
            try:
                os.kill(record["lingering_pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def entry(workspace):
    (only,) = workspace.cache_entries().values()
    return only


def exec_args(workspace):
    return workspace.config()["users"][0]["user"]["exec"]["args"]


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_browser_login_configures_kubectl(oidc_provider_factory, iam_site, workspace, browser):
    oidc_provider = oidc_provider_factory()
    standin = iam_site(oidc_provider)
    browser(oidc_provider)
    result = workspace.run("kubectl-iam", "login", "--browser")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubectl configured correctly\n"
    assert "To sign in, open https://127.0.0.1:" in result.stderr and "enter the code" not in result.stderr
    (opened,) = browser.opened()
    assert "error" not in opened, opened
    assert opened["steps"] == ["login", "consent", "loopback"]
    assert opened["status"] == 200 and "return to the terminal" in opened["text"]
    assert opened["url"].startswith("http://127.0.0.1:") and "/callback?code=" in opened["url"]
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert "No resources found in physics namespace." in pods.stdout + pods.stderr
    assert {r["user"] for r in standin.requests if r["namespace"] == "physics"} == {"alice"}
    cached = entry(workspace)
    assert cached["refresh_token"] and cached["claims"]["preferred_username"] == "alice"
    exec_ = workspace.config()["users"][0]["user"]["exec"]
    assert exec_["args"][:3] == ["get-token", "--issuer", oidc_provider.issuer.rstrip("/")]
    grants = [r.get("grant_type") for r in oidc_provider.token_requests()]
    assert grants.count("authorization_code") >= 1
    # Nothing went to the device endpoint, and the listener is gone.
    port = int(opened["url"].split(":")[2].split("/")[0])
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/callback", timeout=5)


def test_the_browser_is_the_default_on_a_desktop_terminal(oidc_provider_factory, iam_site, workspace, browser):
    oidc_provider = oidc_provider_factory()
    iam_site(oidc_provider)
    browser(oidc_provider)
    code, shown, _ = run_on_terminal([str(BIN / "kubectl-iam"), "login"], workspace.env, {})
    assert code == 0, shown
    assert "To sign in, open https://" in shown and "enter the code" not in shown
    assert "kubectl configured correctly" in shown
    assert browser.opened()[0]["status"] == 200


def test_without_a_terminal_the_default_stays_the_device_flow(oidc_provider_factory, iam_site, workspace, browser):
    provider = oidc_provider_factory(device_interval=1)
    iam_site(provider)
    browser(provider, action="ignore")  # records what it is asked to open, and opens nothing
    result, shown = run_with_person(workspace, provider, ["kubectl-iam", "login"])
    assert shown and result.returncode == 0, result.stderr
    (opened,) = browser.opened()
    assert "/device" in opened["argv"][0]  # as before: the device page opened in the browser too
    assert [r.get("grant_type") for r in provider.token_requests()].count("authorization_code") == 0


def test_no_browser_keeps_the_device_flow_on_a_desktop_terminal(oidc_provider_factory, iam_site, workspace,
                                                                 browser):
    provider = oidc_provider_factory(device_interval=1, device_code_ttl=3)
    iam_site(provider)
    browser(provider)
    code, shown, _ = run_on_terminal([str(BIN / "kubectl-iam"), "login", "--no-browser"], workspace.env, {})
    assert code == 3 and "enter the code" in shown and "the code expired" in shown, shown
    assert browser.opened() == []  # and nothing opened


def test_a_wrong_state_ends_with_one_line_and_leaves_everything_as_it_was(oidc_provider_factory, iam_site, workspace,
                                                                          browser):
    oidc_provider = oidc_provider_factory()
    iam_site(oidc_provider)
    browser(oidc_provider, replace={"state": "forged-state"})
    before = kubeconfig_with_another_context(workspace)
    result = workspace.run("kubectl-iam", "login", "--browser")
    assert result.returncode == 3, result.stderr
    assert "state does not match" in last_line(result) and last_line(result).startswith("kubectl-iam: error:")
    assert "Traceback" not in result.stderr
    assert workspace.kubeconfig.read_bytes() == before and workspace.cache_entries() == {}
    assert [r.get("grant_type") for r in oidc_provider.token_requests()].count("authorization_code") == 0
    (opened,) = browser.opened()
    assert opened["status"] == 200 and "does not belong" in opened["text"]


@pytest.mark.parametrize("at", ["login", "consent"])
def test_a_refusal_at_the_provider_is_one_line_with_its_code(oidc_provider_factory, iam_site, workspace, browser, at):
    oidc_provider = oidc_provider_factory()
    iam_site(oidc_provider)
    browser(oidc_provider, action="deny", at=at)
    before = kubeconfig_with_another_context(workspace)
    result = workspace.run("kubectl-iam", "login", "--browser")
    assert result.returncode == 3, result.stderr
    line = last_line(result)
    assert line.startswith("kubectl-iam: error: the OIDC provider refused the sign-in: access_denied"), line
    assert "End-User aborted interaction" in line and "Traceback" not in result.stderr
    assert workspace.kubeconfig.read_bytes() == before and workspace.cache_entries() == {}
    (opened,) = browser.opened()
    assert "error=access_denied" in opened["url"] and "access_denied" in opened["text"]


def kubeconfig_with_another_context(workspace) -> bytes:
    """A kubeconfig holding someone else's context, written before the login; returns its bytes."""
    workspace.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    workspace.kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: other\n"
        "clusters:\n- name: other\n  cluster:\n    server: https://other.example:6443\n"
        "users:\n- name: other\n  user:\n    token: not-ours\n"
        "contexts:\n- name: other\n  context:\n    cluster: other\n    user: other\n")
    workspace.kubeconfig.chmod(0o600)
    return workspace.kubeconfig.read_bytes()


def test_kubectl_at_a_terminal_signs_in_again_through_the_browser_when_the_refresh_token_is_gone(
        oidc_provider_factory, iam_site, workspace, browser):
    provider = oidc_provider_factory(id_token_ttl=20)
    standin = iam_site(provider)
    browser(provider)
    assert workspace.run("kubectl-iam", "login", "--browser").returncode == 0
    cached = entry(workspace)
    revoked = requests.post(provider.discovery()["revocation_endpoint"], verify=str(provider.ca_cert),
                            data={"token": cached["refresh_token"], "client_id": provider.client_id}, timeout=10)
    assert revoked.status_code == 200
    wait_until(cached["tokens"]["id"]["expires_at"])
    code, shown, _ = run_on_terminal([str(KUBECTL), "--cache-dir", str(workspace.root / "kubectl-cache"),
                                      "get", "pods", "-n", "physics"], workspace.env, {})
    assert code == 0, shown
    assert "the refresh token was refused" in shown and "To sign in, open https://" in shown
    assert "No resources found in physics namespace." in shown
    assert [r["status"] for r in browser.opened()] == [200, 200]
    renewed = entry(workspace)
    assert renewed["refresh_token"] != cached["refresh_token"]
    assert renewed["tokens"]["id"]["value"] != cached["tokens"]["id"]["value"]
    assert standin.requests[-1]["user"] == "alice"


def test_a_browser_left_running_does_not_hold_get_tokens_answer(oidc_provider_factory, iam_site, workspace, browser,
                                                                 tmp_path):
    oidc_provider = oidc_provider_factory()
    # kubectl reads the plugin's stdout to its end: a browser started by the plugin must not keep it open.
    iam_site(oidc_provider)
    browser(oidc_provider, linger=120)
    args = ["get-token", "--issuer", oidc_provider.issuer, "--client-id", oidc_provider.client_id,
            "--cacert", str(oidc_provider.ca_cert)]  # no cache entry: nothing to refresh with
    with open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen([str(BIN / "kubectl-iam"), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=stderr, env={**workspace.env, "KUBERNETES_EXEC_INFO": INTERACTIVE})
        read: list = []
        reader = threading.Thread(target=lambda: read.append(proc.stdout.read()))  # to its end, as kubectl does
        reader.start()
        reader.join(timeout=60)
        proc.wait(timeout=10)
    assert read, "the plugin has exited but its stdout is still open: the browser's child holds it"
    stdout = read[0]
    shown = (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, shown
    assert "there is no refresh token; sign in again" in shown
    credential = json.loads(stdout)
    assert credential["status"]["token"] == entry(workspace)["tokens"]["id"]["value"]
    (opened,) = browser.opened()
    assert opened.get("lingering_pid") and opened["status"] == 200


def test_headless_chromium_signs_in(oidc_provider_factory, iam_site, workspace, browser):
    from tests.servers.debian import ensure_commands

    missing = ensure_commands({"chromium": "chromium"})
    if missing:
        pytest.skip(missing)
    oidc_provider = oidc_provider_factory()
    standin = iam_site(oidc_provider)
    browser(oidc_provider, driver="chromium")
    started = time.monotonic()
    result = workspace.run("kubectl-iam", "login", "--browser", timeout=180)
    assert result.returncode == 0, result.stderr + json.dumps(browser.opened())
    (opened,) = browser.opened()
    assert opened["steps"] == ["login", "consent", "loopback"], opened
    assert opened["status"] == 200 and "return to the terminal" in opened["text"]
    assert Path(workspace.kubeconfig).exists() and time.monotonic() - started < 180
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert standin.requests[-1]["user"] == "alice"
    # Chromium went through the provider's pages itself: its own requests are in the provider's log.
    paths = [r["path"] for r in oidc_provider.requests()]
    assert any(p.startswith("/interaction/") for p in paths) and "/authorize" in paths
