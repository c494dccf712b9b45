"""kubectl_caas.oidc.registration against a stub provider: what the real test provider cannot be
made to show. Every request goes to a scripted fake behind requests' transport adapter (no
network). Pinned: the metadata we register, every field of an answer checked (malformed answers
end in one line and record nothing), the registration access token sent only to the issuer's own
https origin, 4xx answers with error and error_description, reuse after an RFC 7592 read, scope
widening with an update, and logout's delete with its three endings (done, refused, retry later).
"""
from __future__ import annotations

import io
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from kubectl_caas import cache, errors
from kubectl_caas.errors import AuthError, CaasError, UsageError
from kubectl_caas.oidc import registration
from kubectl_caas.runtime import Runtime

ISSUER = "https://iam.example.org"
ISSUER_SLASH = ISSUER + "/"
REGISTRATION_URL = ISSUER + "/iam/api/client-registration"
CLIENT_URI = REGISTRATION_URL + "/c-1"
SECRET, TOKEN = "s3cret-value-of-the-client", "rat-value-of-the-registration"


def answer(**changes: Any) -> Dict[str, Any]:
    """What INDIGO IAM answers a registration with (201)."""
    body = {"client_id": "c-1", "client_secret": SECRET, "client_name": "kubectl-iam on vm",
            "grant_types": list(registration.GRANT_TYPES), "redirect_uris": list(registration.REDIRECT_URIS),
            "scope": "openid profile email offline_access", "token_endpoint_auth_method": "client_secret_basic",
            "registration_access_token": TOKEN, "registration_client_uri": CLIENT_URI, "dynamically_registered": True}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


class Stub:
    """Scripted answers per (method, URL); records every request. Anything unscripted fails the test."""

    def __init__(self) -> None:
        self.metadata = {"issuer": ISSUER_SLASH, "registration_endpoint": REGISTRATION_URL,
                         "token_endpoint": ISSUER + "/token", "jwks_uri": ISSUER + "/jwk"}
        self.routes: Dict[Tuple[str, str], List[Any]] = {}
        self.sent: List[requests.PreparedRequest] = []

    def on(self, method: str, url: str, *replies: Any) -> None:
        self.routes[(method, url)] = list(replies)

    def calls(self, method: str, url: Optional[str] = None) -> List[requests.PreparedRequest]:
        return [r for r in self.sent if r.method == method and (url is None or r.url == url)]

    def send(self, adapter: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        if (request.method, request.url) == ("GET", ISSUER + "/.well-known/openid-configuration"):
            status, payload, headers = 200, self.metadata, {}
        else:
            queue = self.routes.get((request.method or "", request.url or ""))
            assert queue, f"unexpected {request.method} {request.url}"
            reply = queue.pop(0)
            status, payload, headers = (reply + ({},))[:3] if len(reply) == 2 else reply
        response = requests.Response()
        response.status_code, response.reason, response.url, response.request = status, "stub", request.url, request
        raw = json.dumps(payload).encode() if isinstance(payload, (dict, list)) else str(payload).encode()
        response.raw = io.BytesIO(raw)
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json", **headers})
        return response


@pytest.fixture
def stub(monkeypatch, tmp_path) -> Stub:
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "KUBECTL_CAAS_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    fake = Stub()
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda adapter, request, **kw: fake.send(adapter, request))
    return fake


class Notes(io.StringIO):
    def lines(self) -> List[str]:
        return self.getvalue().splitlines()


def runtime(debug: bool = False) -> Runtime:
    return Runtime(stderr=Notes(), sleep=lambda seconds: None, debug=debug)


def provider(rt: Optional[Runtime] = None, **values: Any):
    return registration.provider_for_issuer(dict({"issuer": ISSUER}, **values), rt or runtime())


def record_on_disk(account: Optional[str] = None) -> Optional[Dict[str, Any]]:
    return cache.read_entry(registration.record_path(ISSUER, account))


def stored(**changes: Any) -> Dict[str, Any]:
    record = registration.checked(answer(), ISSUER_SLASH)
    record.update(changes)
    cache.write_entry(registration.record_path(ISSUER), record)
    return record


# -- what we ask for ------------------------------------------------------------------------------

def test_metadata_asks_for_a_confidential_client_with_the_three_grants_and_loopback_redirects():
    metadata = registration.client_metadata("openid profile", hostname="lab\x1b[31m-pc")
    assert metadata["scope"] == "openid profile offline_access"
    assert metadata["grant_types"] == ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token",
                                       "authorization_code"]
    assert metadata["response_types"] == ["code"]
    assert metadata["token_endpoint_auth_method"] == "client_secret_basic"
    assert metadata["client_name"] == "kubectl-iam on lab[31m-pc"
    assert metadata["redirect_uris"] and all(u.startswith("http://127.0.0.1") and u.endswith("/callback")
                                             for u in metadata["redirect_uris"])
    assert registration.client_metadata("openid offline_access")["scope"] == "openid offline_access"


def test_register_posts_the_metadata_without_credentials_and_returns_the_checked_record(stub):
    stub.on("POST", REGISTRATION_URL, (201, answer()))
    record = registration.register(provider(), "openid profile email offline_access")
    (sent,) = stub.calls("POST")
    assert "Authorization" not in sent.headers
    body = json.loads(sent.body)
    assert body["client_name"].startswith("kubectl-iam on ") and body["scope"] == "openid profile email offline_access"
    assert record["client_id"] == "c-1" and record["client_secret"] == SECRET
    assert record["registration_access_token"] == TOKEN and record["registration_client_uri"] == CLIENT_URI
    assert record["issuer"] == ISSUER_SLASH  # as the provider writes it


def test_ensure_registers_once_and_records_the_secrets_in_a_0600_file(stub):
    stub.on("POST", REGISTRATION_URL, (201, answer()))
    rt = runtime()
    record = registration.ensure(provider(rt), "disk")
    assert record["client_secret"] == SECRET
    path = registration.record_path(ISSUER)
    assert record_on_disk() == record
    import os
    import stat

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "registered client c-1" in rt.stderr.getvalue()
    assert SECRET not in rt.stderr.getvalue() and TOKEN not in rt.stderr.getvalue()


# -- what the provider answers --------------------------------------------------------------------

@pytest.mark.parametrize("reply, said", [
    ((201, "<html>welcome</html>"), "not JSON"),
    ((201, ["c-1"]), "unexpected JSON"),
    ((201, answer(client_id=None)), "without a usable client_id"),
    ((201, answer(client_id=42)), "without a usable client_id"),
    ((201, answer(client_id="c 1")), "without a usable client_id"),
    ((201, answer(client_id="c\x1b]52;c;AAAA\x07")), "without a usable client_id"),
    ((201, answer(client_secret=12345)), "client_secret is not a usable secret"),
    ((201, answer(client_secret=None)), "gave no client secret"),
    ((201, answer(registration_access_token=["t"])), "registration_access_token is not a usable token"),
    ((201, answer(grant_types="refresh_token")), "grant_types is not a list"),
    ((201, answer(redirect_uris=[1, 2])), "redirect_uris is not a list"),
    ((201, answer(scope=["openid"])), "scope is not a string"),
    ((201, answer(client_secret_expires_at="never")), "client_secret_expires_at is not a number"),
])
def test_malformed_registration_answers_end_in_one_line_and_record_nothing(stub, reply, said):
    stub.on("POST", REGISTRATION_URL, reply)
    with pytest.raises(CaasError) as caught:
        registration.ensure(provider(), "disk")
    assert said in str(caught.value)
    assert "\n" not in str(caught.value)
    assert record_on_disk() is None


@pytest.mark.parametrize("uri", [
    "https://evil.example.net/iam/api/client-registration/c-1",  # another host
    "http://iam.example.org/iam/api/client-registration/c-1",  # plain http
    "https://iam.example.org:8443/iam/api/client-registration/c-1",  # another port
    "https://someone@iam.example.org/iam/api/client-registration/c-1",  # user information
    "https://iam.example.org.evil.example.net/c-1",
    "javascript:alert(1)",
])
def test_registration_client_uri_off_the_issuers_origin_is_refused_and_gets_no_token(stub, uri):
    stub.on("POST", REGISTRATION_URL, (201, answer(registration_client_uri=uri)))
    with pytest.raises(CaasError) as caught:
        registration.ensure(provider(), "disk")
    assert "not an https:// URL on the issuer's origin" in str(caught.value) and "c-1" in str(caught.value)
    assert [r.method for r in stub.sent] == ["GET", "POST"]  # discovery and the registration, nothing more
    assert record_on_disk() is None


def test_a_stored_uri_off_the_origin_is_never_sent_the_token(stub):
    stored(registration_client_uri="https://evil.example.net/c-1")
    problem = registration.end(registration.record_path(ISSUER), {"issuer": ISSUER}, runtime(), "ctx", lambda cid: [])
    assert problem and "web interface" in problem
    assert stub.sent == []


@pytest.mark.parametrize("status, body, kind, said, hint", [
    (400, {"error": "invalid_client_metadata", "error_description": "scope \x1b[31mwlcg\x1b[0m unknown"}, UsageError,
     "HTTP 400 to the client registration: invalid_client_metadata: scope \x1b[31mwlcg", "--scope"),
    (400, {"error": "Grant type not allowed: password"}, UsageError, "Grant type not allowed: password", "--scope"),
    (401, {"error": "unauthorized", "error_description": "Full authentication is required"}, AuthError,
     "HTTP 401 to the client registration: unauthorized: Full authentication", "--client-id"),
    (403, {"error": "You do not have enough privileges to access this client registration API"}, AuthError,
     "enough privileges", "--client-id"),
])
def test_4xx_answers_name_the_error_and_its_description_and_say_what_to_do(stub, capsys, status, body, kind, said,
                                                                            hint):
    stub.on("POST", REGISTRATION_URL, (status, body))
    with pytest.raises(kind) as caught:
        registration.ensure(provider(), "disk")
    assert said in caught.value.message and hint in caught.value.hint
    errors.report("kubectl-iam", caught.value)
    (line,) = capsys.readouterr().err.splitlines()
    assert "\x1b" not in line and ("\\x1b[31m" in line or status != 400 or "Grant" in line)
    assert record_on_disk() is None


def test_a_provider_without_a_registration_endpoint_is_told_apart(stub):
    del stub.metadata["registration_endpoint"]
    with pytest.raises(UsageError) as caught:
        registration.ensure(provider(), "disk")
    assert "offers no dynamic client registration" in caught.value.message and "--client-id" in caught.value.hint


def test_a_plain_http_registration_endpoint_is_refused(stub):
    stub.metadata["registration_endpoint"] = "http://iam.example.org/register"
    with pytest.raises(CaasError, match="not an https:// URL"):
        registration.ensure(provider(), "disk")
    assert stub.calls("POST") == []


def test_a_redirect_is_refused_not_followed(stub):
    stub.on("POST", REGISTRATION_URL, (307, {}, {"Location": "https://evil.example.net/register"}))
    with pytest.raises(CaasError, match="redirects to https://evil.example.net/register"):
        registration.ensure(provider(), "disk")
    assert len(stub.calls("POST")) == 1


def test_no_retry_of_the_registration_after_a_500(stub):
    stub.on("POST", REGISTRATION_URL, (500, {"error": "server_error"}))
    with pytest.raises(CaasError, match="HTTP 500"):
        registration.ensure(provider(), "disk")
    assert len(stub.calls("POST")) == 1


# -- reuse ----------------------------------------------------------------------------------------

def test_a_recorded_registration_the_provider_still_knows_is_reused(stub):
    stored()
    stub.on("GET", CLIENT_URI, (200, answer(client_secret=None, registration_access_token=None)))
    rt = runtime()
    record = registration.ensure(provider(rt), "disk")
    assert record["client_secret"] == SECRET and record["registration_access_token"] == TOKEN
    (read,) = stub.calls("GET", CLIENT_URI)
    assert read.headers["Authorization"] == f"Bearer {TOKEN}"
    assert stub.calls("POST") == []
    assert "using client c-1" in rt.stderr.getvalue()


def test_a_read_about_another_client_is_refused(stub):
    stored()
    stub.on("GET", CLIENT_URI, (200, answer(client_id="c-2")))
    with pytest.raises(CaasError, match="about client c-2, not c-1"):
        registration.ensure(provider(), "disk")


@pytest.mark.parametrize("status", [401, 404])
def test_a_recorded_registration_the_provider_refuses_is_replaced(stub, status):
    stored()
    stub.on("GET", CLIENT_URI, (status, {"error": "invalid_token"}))
    stub.on("POST", REGISTRATION_URL, (201, answer(client_id="c-2", registration_client_uri=REGISTRATION_URL + "/c-2")))
    rt = runtime()
    record = registration.ensure(provider(rt), "disk")
    assert record["client_id"] == "c-2" and record_on_disk()["client_id"] == "c-2"
    assert "no longer accepts client c-1" in rt.stderr.getvalue()


def test_an_unreachable_provider_does_not_register_a_second_client(stub):
    stored()
    stub.on("GET", CLIENT_URI, *[(503, "busy")] * 3)
    with pytest.raises(CaasError, match="HTTP 503"):
        registration.ensure(provider(), "disk")
    assert stub.calls("POST") == [] and record_on_disk()["client_id"] == "c-1"


def test_missing_scopes_are_added_with_an_update(stub):
    stored()
    stub.on("GET", CLIENT_URI, (200, answer()))
    stub.on("PUT", CLIENT_URI, (200, answer(scope="openid profile email offline_access wlcg.groups",
                                            registration_access_token="rat-2")))
    rt = runtime()
    record = registration.ensure(provider(rt, scope="openid profile offline_access wlcg.groups"), "disk")
    (put,) = stub.calls("PUT")
    body = json.loads(put.body)
    assert body["client_id"] == "c-1" and set(body["scope"].split()) >= {"email", "wlcg.groups"}
    assert record["registration_access_token"] == "rat-2" and record_on_disk()["registration_access_token"] == "rat-2"
    assert "added the scopes 'wlcg.groups'" in rt.stderr.getvalue()


def test_a_refused_update_keeps_the_client_and_registers_no_other(stub):
    stored()
    stub.on("GET", CLIENT_URI, (200, answer()))
    stub.on("PUT", CLIENT_URI, (403, {"error": "Client c-1 is suspended!"}))
    with pytest.raises(UsageError) as caught:
        registration.ensure(provider(scope="openid profile offline_access wlcg.groups"), "disk")
    assert "could not add scopes to client c-1" in caught.value.message and "suspended" in caught.value.message
    assert "--scope" in caught.value.hint
    assert stub.calls("POST") == [] and record_on_disk()["client_id"] == "c-1"


def test_a_scope_the_provider_does_not_register_is_said_in_one_line(stub):
    stub.on("POST", REGISTRATION_URL, (201, answer(scope="openid profile offline_access")))
    with pytest.raises(UsageError, match="without the scopes 'email'"):
        registration.ensure(provider(), "disk")
    assert record_on_disk()["client_id"] == "c-1"  # kept for a login with a scope it allows


def test_each_account_label_has_a_record_of_its_own():
    assert registration.record_path(ISSUER) == registration.record_path(ISSUER_SLASH)
    assert registration.record_path(ISSUER, "work") != registration.record_path(ISSUER)
    assert registration.record_path(ISSUER, "work") != registration.record_path(ISSUER, "play")


# -- logout ---------------------------------------------------------------------------------------

def end(users: Callable[[str], List[str]] = lambda cid: []) -> Tuple[Optional[str], Runtime]:
    rt = runtime()
    return registration.end(registration.record_path(ISSUER), {"issuer": ISSUER}, rt, "ctx", users), rt


def test_logout_deletes_the_client_with_its_registration_token(stub):
    stored()
    stub.on("DELETE", CLIENT_URI, (204, ""))
    problem, rt = end()
    assert problem is None and "ctx: deleted client c-1" in rt.stderr.getvalue()
    (sent,) = stub.calls("DELETE")
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert record_on_disk() is None


def test_a_refused_delete_is_one_line_and_forgets_the_refused_token(stub):
    stored()
    stub.on("DELETE", CLIENT_URI, (401, {"error": "invalid_token", "error_description": "invalid token provided"}))
    problem, _rt = end()
    assert problem and "could not delete client c-1" in problem and "invalid_token" in problem
    assert "web interface" in problem and "\n" not in problem
    assert record_on_disk() is None


def test_a_delete_that_fails_for_now_keeps_the_record_for_a_retry(stub):
    stored()
    stub.on("DELETE", CLIENT_URI, *[(503, "busy")] * 3)
    problem, _rt = end()
    assert problem and "registration is kept" in problem and "logout --context ctx" in problem
    assert record_on_disk()["client_id"] == "c-1"


def test_a_client_another_signed_in_context_uses_is_kept(stub):
    stored()
    problem, rt = end(lambda cid: ["other"] if cid == "c-1" else [])
    assert problem is None and "kept client c-1" in rt.stderr.getvalue() and "other still use it" in rt.stderr.getvalue()
    assert stub.sent == [] and record_on_disk() is not None


def test_nothing_recorded_nothing_sent(stub):
    problem, rt = end()
    assert problem is None and rt.stderr.getvalue() == "" and stub.sent == []


# -- secrets --------------------------------------------------------------------------------------

def test_debug_log_redacts_the_secret_and_the_registration_token(stub, capsys):
    stub.on("POST", REGISTRATION_URL, (201, answer()))
    stub.on("DELETE", CLIENT_URI, (204, ""))
    rt = runtime(debug=True)
    registration.ensure(provider(rt), "disk")
    registration.end(registration.record_path(ISSUER), {"issuer": ISSUER}, rt, "ctx", lambda cid: [])
    log = capsys.readouterr().err
    assert "client-registration" in log and "DELETE" in log
    assert SECRET not in log and TOKEN not in log
