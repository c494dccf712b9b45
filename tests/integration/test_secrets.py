"""Secrets stay in the 0600 cache: never in the kubeconfig, other files, --debug output, or the
argv of a process the plugins start."""
from __future__ import annotations

import json
import os
import stat

from tests.integration.harness import PASSWORD, run_with_person, wait_until


def assert_no_secret(text: str, secrets, where: str) -> None:
    for secret in secrets:
        assert secret and secret not in text, f"a secret leaked into {where}"


def files_outside_cache(workspace) -> str:
    chunks = []
    for path in workspace.home.rglob("*"):
        if path.is_file() and workspace.cache not in path.parents:
            chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)


def test_openstack_secrets_appear_only_in_the_0600_cache(keystone, site, workspace, alice):
    outputs = []
    login = workspace.run("kubectl-openstack", "login", "--debug", "--user", alice["name"], "--project", "CMS",
                          "--password-stdin", input=PASSWORD)
    assert login.returncode == 0, login.stderr
    assert "> POST" in login.stderr and "<redacted>" in login.stderr  # --debug really shows the exchange
    outputs.append(login.stdout + login.stderr)
    (first,) = workspace.cache_entries().values()
    secrets = {PASSWORD, first["tokens"]["keystone"]["value"], first["application_credential"]["secret"]}
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    for path in workspace.cache.glob("*.json"):  # force a renewal, with the password from the environment
        path.unlink()
    renewed = workspace.run("kubectl-openstack", *args, "--debug", env={"OS_PASSWORD": PASSWORD})
    assert renewed.returncode == 0, renewed.stderr
    outputs.append(renewed.stderr)
    (second,) = workspace.cache_entries().values()
    secrets.add(second["tokens"]["keystone"]["value"])
    pods = workspace.kubectl("get", "pods")
    assert pods.returncode == 0, pods.stderr
    for command in (["status", "--debug"], ["logout", "--debug", "--password-stdin"]):
        result = workspace.run("kubectl-openstack", *command, input=PASSWORD)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    assert_no_secret("\n".join(outputs), secrets, "--debug output")
    assert_no_secret(files_outside_cache(workspace), secrets, "a file outside the cache")


def test_iam_secrets_appear_only_in_the_0600_cache(oidc_provider_factory, iam_site, workspace, tmp_path):
    provider = oidc_provider_factory(device_interval=1, id_token_ttl=20)
    iam_site(provider)
    # A desktop with a browser: record what the plugin starts, and with which arguments.
    browser_log = tmp_path / "browser-argv.json"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {browser_log}\n")
    browser.chmod(0o755)
    env = {"DISPLAY": ":99", "BROWSER": str(browser)}
    login, shown = run_with_person(workspace, provider, ["kubectl-iam", "login", "--debug"], env=env)
    assert shown and login.returncode == 0, login.stderr
    entry = next(iter(workspace.cache_entries().values()))
    secrets = {entry["refresh_token"], entry["tokens"]["id"]["value"], entry["tokens"]["access"]["value"]}
    launched = browser_log.read_text().split()
    assert len(launched) == 1 and launched[0].startswith(provider.issuer)
    assert_no_secret(" ".join(launched), secrets, "the browser's argv")
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    wait_until(entry["tokens"]["id"]["expires_at"])
    refreshed = workspace.run("kubectl-iam", *args, "--debug")
    assert refreshed.returncode == 0, refreshed.stderr
    assert "grant_type=refresh_token" in refreshed.stderr
    entry = next(iter(workspace.cache_entries().values()))
    secrets |= {entry["refresh_token"], entry["tokens"]["id"]["value"], entry["tokens"]["access"]["value"]}
    logout = workspace.run("kubectl-iam", "logout", "--debug")
    assert logout.returncode == 0, logout.stderr
    assert_no_secret(login.stderr + refreshed.stderr + logout.stderr, secrets, "--debug output")
    assert_no_secret(files_outside_cache(workspace), secrets, "a file outside the cache")


def test_cache_holds_secrets_only_in_0600_files(keystone, site, workspace, alice):
    result = workspace.run("kubectl-openstack", "login", "--user", alice["name"], "--project", "CMS",
                           "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    for path in workspace.cache.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_uid == os.getuid()
    assert json.loads(next(workspace.cache.glob("*.json")).read_text())["application_credential"]["secret"]
