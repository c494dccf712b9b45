"""`kubectl iam login --register` end to end: no pre-registered client. The IAM-like test provider
(tests/servers/oidc: open RFC 7591 registration at /iam/api/client-registration, RFC 7592 read,
update and delete) registers a client for the login, real kubectl then reaches the Kubernetes-API
stand-in through the plugin, a second login reuses the registration, and logout deletes the client
at the provider (or says in one line why it cannot).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import requests

from tests.integration.harness import run_with_person
from tests.servers.kube_api import OIDCIssuerConfig

REGISTRATION_PATH = "/iam/api/client-registration"


@pytest.fixture
def iam(oidc_provider_factory):
    return oidc_provider_factory(device_interval=1)


@pytest.fixture
def site(iam, kube_api_for, workspace):
    """kubectl-iam set up for the issuer with no client id anywhere; an API stand-in trusting
    access tokens for the audience caas-cluster."""
    standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=iam.issuer, audience="caas-cluster",
                                                  ca_file=iam.ca_cert)])
    workspace.env.update({"IAM_ISSUER": iam.issuer, "IAM_CACERT": str(iam.ca_cert), "CAAS_SERVER": standin.url,
                          "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    for desktop in ("DISPLAY", "WAYLAND_DISPLAY"):  # no browser of the machine running the tests
        workspace.env.pop(desktop, None)
    return standin


def sign_in(workspace, provider, *extra, login="alice"):
    result, _shown = run_with_person(workspace, provider, ["kubectl-iam", "login", "--no-browser", "--register", *extra],
                                     login=login)
    return result


def records(workspace) -> dict:
    """The registration records in the token cache, by file name."""
    return {name: entry for name, entry in workspace.cache_entries().items() if name.startswith("iam-registration-")}


def only_record(workspace) -> dict:
    (record,) = records(workspace).values()
    return record


def record_file(workspace):
    (path,) = workspace.cache.glob("iam-registration-*.json")
    return path


def exec_args(workspace, context=None) -> list:
    config = workspace.config()
    name = context or config["current-context"]
    user = next(c["context"]["user"] for c in config["contexts"] if c["name"] == name)
    return next(u["user"]["exec"]["args"] for u in config["users"] if u["name"] == user)


def client_id_of(args) -> str:
    return args[args.index("--client-id") + 1]


def registrations(provider) -> list:
    return [r for r in provider.requests() if r["method"] == "POST" and r["path"] == REGISTRATION_PATH]


def read_client(provider, record) -> requests.Response:
    return requests.get(record["registration_client_uri"], verify=str(provider.ca_cert), timeout=10,
                        headers={"Authorization": f"Bearer {record['registration_access_token']}"})


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kubectl-iam: error: "), result.stderr
    return last


def test_register_signs_in_with_a_client_of_its_own_and_kubectl_works(iam, site, workspace, kube_api_for):
    result = sign_in(workspace, iam)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubectl configured correctly\n"
    record = only_record(workspace)
    client_id, secret, token = record["client_id"], record["client_secret"], record["registration_access_token"]
    assert f"registered client {client_id}" in result.stderr
    (registration,) = registrations(iam)
    assert registration["status"] == 201
    # The client id goes into the exec args; its secret and registration token nowhere but the cache.
    args = exec_args(workspace)
    assert client_id_of(args) == client_id
    kubeconfig = workspace.kubeconfig.read_text()
    for secret_value in (secret, token):
        assert secret_value not in kubeconfig and secret_value not in " ".join(args)
        assert secret_value not in result.stderr + result.stdout
    assert stat.S_IMODE(os.stat(record_file(workspace)).st_mode) == 0o600
    # The ID token is for the registered client: an API server set up for it lets alice in.
    standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=iam.issuer, audience=client_id, ca_file=iam.ca_cert)])
    pods = workspace.kubectl("--server", standin.url, "get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert standin.requests[-1]["user"] == "alice"
    # Renewal authenticates the (confidential) client with the secret kept in the 0600 cache entry.
    (entry_path,) = [p for p in workspace.cache.glob("iam-*.json") if not p.name.startswith("iam-registration-")]
    entry = json.loads(entry_path.read_text())
    assert entry["client_secret"] == secret
    entry["tokens"]["id"]["expires_at"] = 0
    entry_path.write_text(json.dumps(entry))
    pods = workspace.kubectl("--server", standin.url, "get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert [r["status"] for r in iam.token_requests("refresh_token")] == [200]


def test_access_token_for_an_audience_and_a_second_login_reuses_the_registration(iam, site, workspace):
    first = sign_in(workspace, iam, "--token", "access", "--audience", "caas-cluster")
    assert first.returncode == 0, first.stderr
    client_id = only_record(workspace)["client_id"]
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert site.requests[-1]["user"] == "alice"
    again = sign_in(workspace, iam, "--token", "access", "--audience", "caas-cluster")
    assert again.returncode == 0, again.stderr
    assert f"using client {client_id}" in again.stderr
    assert len(registrations(iam)) == 1  # checked with an RFC 7592 read, not registered again
    assert [r["status"] for r in iam.requests() if r["method"] == "GET" and r["path"].startswith(REGISTRATION_PATH)
            ] == [200]
    assert client_id_of(exec_args(workspace)) == client_id and only_record(workspace)["client_id"] == client_id
    assert workspace.kubectl("get", "pods", "-n", "physics").returncode == 0


def test_a_registration_the_provider_refuses_is_replaced(iam, site, workspace):
    assert sign_in(workspace, iam).returncode == 0
    old = only_record(workspace)
    path = record_file(workspace)
    path.write_text(json.dumps(dict(old, registration_access_token="rotated-by-an-administrator")))
    again = sign_in(workspace, iam)
    assert again.returncode == 0, again.stderr
    assert f"no longer accepts client {old['client_id']}" in again.stderr
    assert len(registrations(iam)) == 2
    new = only_record(workspace)
    assert new["client_id"] != old["client_id"] and client_id_of(exec_args(workspace)) == new["client_id"]


def test_logout_deletes_the_registered_client_at_the_provider(iam, site, workspace):
    assert sign_in(workspace, iam).returncode == 0
    record = only_record(workspace)
    assert read_client(iam, record).status_code == 200
    result = workspace.run("kubectl-iam", "logout")
    assert result.returncode == 0, result.stderr
    assert f"deleted client {record['client_id']}" in result.stderr
    assert read_client(iam, record).status_code == 401  # the client and its registration token are gone
    assert [r["status"] for r in iam.requests() if r["method"] == "DELETE"] == [204]
    assert workspace.cache_entries() == {}
    # A later --register login registers a new client.
    assert sign_in(workspace, iam).returncode == 0
    assert len(registrations(iam)) == 2


def test_refused_delete_ends_in_one_line_and_forgets_the_refused_token(iam, site, workspace):
    assert sign_in(workspace, iam).returncode == 0
    record = only_record(workspace)
    record_file(workspace).write_text(json.dumps(dict(record, registration_access_token="rotated-by-an-administrator")))
    result = workspace.run("kubectl-iam", "logout")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert f"could not delete client {record['client_id']}" in line and "401" in line and "web interface" in line
    assert "logged out" in result.stderr  # the sign-in itself is over: refresh token revoked, cache entry gone
    assert workspace.cache_entries() == {}
    assert read_client(iam, record).status_code == 200  # still there: the person is told what to do


def test_unreachable_provider_at_logout_keeps_the_registration_for_a_retry(iam, site, workspace):
    assert sign_in(workspace, iam).returncode == 0
    iam.stop()
    result = workspace.run("kubectl-iam", "logout", env={"KUBECTL_CAAS_TIMEOUT": "5"})
    assert result.returncode != 0
    assert "registration is kept" in result.stderr and "logout --context" in result.stderr, result.stderr
    assert records(workspace)


def test_logout_keeps_a_client_another_signed_in_context_uses(iam, site, workspace):
    # One account label, so one registration; an audience of its own gives "play" its own tokens.
    for context, extra in (("work", ()), ("play", ("--token", "access", "--audience", "caas-cluster"))):
        result = sign_in(workspace, iam, "--context", context, "--account", "shared", *extra)
        assert result.returncode == 0, result.stderr
    assert len(registrations(iam)) == 1
    record = only_record(workspace)
    first = workspace.run("kubectl-iam", "logout", "--context", "work")
    assert first.returncode == 0, first.stderr
    assert f"kept client {record['client_id']}" in first.stderr and "play still use it" in first.stderr
    assert read_client(iam, record).status_code == 200
    second = workspace.run("kubectl-iam", "logout", "--context", "play")
    assert second.returncode == 0, second.stderr
    assert read_client(iam, record).status_code == 401
    assert records(workspace) == {}


def test_register_with_a_client_id_is_refused_in_one_line(iam, site, workspace):
    result = workspace.run("kubectl-iam", "login", "--no-browser", "--register", "--client-id", iam.client_id)
    assert result.returncode == 2
    assert "--register" in one_error_line(result) and "--client-id" in result.stderr
    assert registrations(iam) == [] and not workspace.kubeconfig.exists()


def test_debug_log_shows_no_registration_secret(iam, site, workspace):
    result = sign_in(workspace, iam, "--debug")
    assert result.returncode == 0, result.stderr
    record = only_record(workspace)
    assert REGISTRATION_PATH in result.stderr
    assert record["client_secret"] not in result.stderr
    assert record["registration_access_token"] not in result.stderr


def test_keyring_storage_keeps_the_registration_secrets_out_of_the_cache_files(iam, site, workspace, tmp_path):
    keyring_file = tmp_path / "keyring.json"
    workspace.env.update({"PYTHON_KEYRING_BACKEND": "tests.servers.file_keyring.FileKeyring",
                          "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TEST_KEYRING_FILE": str(keyring_file)})
    result = sign_in(workspace, iam, "--token-storage", "keyring", "--token", "access", "--audience", "caas-cluster")
    assert result.returncode == 0, result.stderr
    record = only_record(workspace)
    assert record["client_secret"] == record["registration_access_token"] == {"stored_in": "keyring"}
    kept = json.loads(keyring_file.read_text())
    assert len(kept) == 4  # the record's secret and token; the login entry's refresh token and copy of the secret
    on_disk = "\n".join(p.read_text() for p in workspace.cache.glob("*.json"))
    assert all(value not in on_disk for value in kept.values())
    # Renewal finds the secret in the keyring: refresh authenticates the confidential client.
    (entry_path,) = [p for p in workspace.cache.glob("iam-*.json") if not p.name.startswith("iam-registration-")]
    entry = json.loads(entry_path.read_text())
    entry["tokens"]["access"]["expires_at"] = 0
    entry_path.write_text(json.dumps(entry))
    assert workspace.kubectl("get", "pods", "-n", "physics").returncode == 0
    assert [r["status"] for r in iam.token_requests("refresh_token")] == [200]
    logout = workspace.run("kubectl-iam", "logout")
    assert logout.returncode == 0, logout.stderr
    assert "deleted client" in logout.stderr and json.loads(keyring_file.read_text()) == {}
