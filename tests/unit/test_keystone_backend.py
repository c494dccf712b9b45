"""kubectl_caas.keystone against a fake Keystone: the renewal order and its refusals, without a server.

Every HTTP request goes to `FakeKeystone` behind requests' transport adapter (keystoneauth1's
Session sends through the requests session we hand it), which answers the few Identity API calls
the backend makes as Keystone does: tokens for password, TOTP, token and application-credential
logins, an auth receipt when multi-factor rules want more, 404 for a deleted application
credential. The Runtime is fake too (environment, clock, secret prompt, stderr), so each test runs
in milliseconds. What is pinned: which source a renewal uses and which it never reaches, the MFA
credential deletion, project and user checks on what Keystone answers, local-time expiries, and
that a redirect is refused with nothing sent twice.
"""
from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from kubectl_caas import cache, exec_plugin, keystone
from kubectl_caas.errors import EXIT_AUTH, EXIT_LOGIN_REQUIRED, EXIT_NETWORK, AuthError, CaasError, LoginRequired
from kubectl_caas.plugins import OPENSTACK
from kubectl_caas.runtime import Runtime

AUTH_URL = "https://keystone.example.org:5000/v3"
NOW = 1_750_000_000.0  # this machine's clock, fixed
LIFETIME = 3600.0  # Keystone's default token lifetime
PASSWORD = "alice-password"
PASSCODE = "123456"
REMEMBER = 7 * 24 * 3600.0
PASSWORD_PROMPT = f"Keystone password for user alice in domain default ({AUTH_URL}): "
PASSCODE_PROMPT = "One-time passcode (TOTP): "
NO_LONGER_WORKS = "kubectl-openstack: the remembered application credential no longer works"

VALUES = {"auth_url": AUTH_URL, "user": "alice", "user_domain_id": "default", "project": "CMS",
          "project_domain_id": "default"}  # get-token's values, as a password login writes them

Reply = Tuple[int, Any, Dict[str, str]]


def isotime(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def keystone_error(status: int, message: str, title: str) -> Reply:
    return status, {"error": {"code": status, "message": message, "title": title}}, {}


UNAUTHORIZED = keystone_error(401, "The request you have made requires authentication.", "Unauthorized")


@dataclass
class Sent:
    method: str
    path: str  # below AUTH_URL, without the query
    url: str
    body: Any
    headers: Dict[str, str]
    status: int = 0  # what the fake answered
    answer: Any = None

    def key(self) -> str:
        return json.dumps([self.method, self.url, self.body, self.headers.get("X-Auth-Token")], sort_keys=True)


@dataclass
class Credential:
    id: str
    name: str
    secret: str
    user_id: str
    project_id: str
    expires_at: Optional[str] = None


@dataclass
class FakeKeystone:
    """Answers as Keystone does for alice (member of CMS and ATLAS) and whatever credentials a test
    adds; records every request. Anything it does not know fails the test."""

    offset: float = 0.0  # Keystone's clock minus ours
    lifetime: float = LIFETIME
    totp: bool = False  # alice's multi-factor rules: password plus TOTP
    forbid_credentials: bool = False  # the site's policy refuses creating application credentials
    tamper: Optional[Callable[[Dict[str, Any]], None]] = None  # rewrites every token body answered
    requests: List[Sent] = field(default_factory=list)
    credentials: Dict[str, Credential] = field(default_factory=dict)
    tokens: Dict[str, Tuple[str, Optional[str]]] = field(default_factory=dict)  # token -> (user, project)
    scripted: Dict[Tuple[str, str], List[Reply]] = field(default_factory=dict)
    created: List[str] = field(default_factory=list)  # ids of the application credentials made
    users = {"u-alice": {"name": "alice", "domain": "default", "password": PASSWORD, "projects": ("p-cms", "p-atlas")}}
    projects = {"p-cms": "CMS", "p-atlas": "ATLAS"}
    _ids = itertools.count(1)

    def add_credential(self, cid: str, secret: str, project_id: str = "p-cms", name: Optional[str] = None) -> None:
        self.credentials[cid] = Credential(cid, name or cid, secret, "u-alice", project_id)

    def script(self, method: str, path: str, *replies: Reply) -> None:
        """Answer the next requests to `path` with these replies, before the usual behaviour."""
        self.scripted.setdefault((method, path), []).extend(replies)

    def logins(self) -> List[str]:
        """Each POST /auth/tokens in order: its methods, the credential it named, "unscoped"."""
        labels = []
        for sent in self.sent("POST", "/auth/tokens"):
            ident = sent.body["auth"]["identity"]
            label = "+".join(ident["methods"])
            if "application_credential" in ident:
                label += " " + (ident["application_credential"].get("id") or ident["application_credential"]["name"])
            if sent.body["auth"].get("scope") == "unscoped":
                label += " unscoped"
            labels.append(label)
        return labels

    def sent(self, method: str, path: str) -> List[Sent]:
        return [s for s in self.requests if s.method == method and s.path == path]

    # -- the transport ------------------------------------------------------------------------------

    def send(self, adapter: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        assert len(self.requests) < 100, "runaway: more than 100 requests to the fake Keystone"
        url = request.url or ""
        assert url.startswith(AUTH_URL + "/"), f"a request left Keystone: {request.method} {url}"
        raw = request.body.decode() if isinstance(request.body, bytes) else request.body
        sent = Sent(request.method or "", urlsplit(url).path[len(urlsplit(AUTH_URL).path):], url,
                    json.loads(raw) if raw else None, dict(request.headers))
        self.requests.append(sent)
        queue = self.scripted.get((sent.method, sent.path))
        status, body, headers = queue.pop(0) if queue else self.answer(sent)
        sent.status, sent.answer = status, body
        response = requests.Response()
        response.status_code = status
        response.reason = "fake"
        response.url = url
        response.request = request
        response.raw = io.BytesIO(json.dumps(body).encode() if body is not None else b"")
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json", **headers})
        response.encoding = "utf-8"
        return response

    def answer(self, sent: Sent) -> Reply:
        if sent.path == "/auth/tokens" and sent.method == "POST":
            return self.login(sent.body["auth"])
        token = self.tokens.get(sent.headers.get("X-Auth-Token", ""))
        if token is None:
            return UNAUTHORIZED
        user_id = token[0]
        if sent.path == "/auth/tokens" and sent.method == "DELETE":
            return (204, None, {}) if self.tokens.pop(sent.headers["X-Subject-Token"], None) else \
                keystone_error(404, "Could not find token.", "Not Found")
        if sent.path == "/auth/projects" and sent.method == "GET":
            return 200, {"projects": [self.project(p) for p in self.users[user_id]["projects"]]}, {}
        prefix = f"/users/{user_id}/application_credentials"
        if sent.path == prefix and sent.method == "POST":
            if self.forbid_credentials:
                return keystone_error(403, "You are not authorized to perform the requested action.", "Forbidden")
            wanted = sent.body["application_credential"]
            cid = f"cred-{next(self._ids)}"
            self.created.append(cid)
            self.credentials[cid] = Credential(cid, wanted["name"], f"secret-of-{cid}", user_id, token[1],
                                               wanted.get("expires_at"))
            return 201, {"application_credential": {"id": cid, "name": wanted["name"], "secret": f"secret-of-{cid}",
                                                    "project_id": token[1], "expires_at": wanted.get("expires_at")}}, {}
        if sent.path.startswith(prefix + "/") and sent.method == "DELETE":
            if self.credentials.pop(sent.path[len(prefix) + 1:], None):
                return 204, None, {}
            return keystone_error(404, "Could not find Application Credential.", "Not Found")
        raise AssertionError(f"the fake Keystone does not serve {sent.method} {sent.path}")

    def login(self, auth: Dict[str, Any]) -> Reply:
        ident = auth["identity"]
        methods = ident["methods"]
        credential = None
        if "application_credential" in methods:
            wanted = ident["application_credential"]
            credential = self.credentials.get(wanted.get("id")) or next(
                (c for c in self.credentials.values() if c.name == wanted.get("name")), None)
            if credential is None:
                # What Keystone answers for a deleted credential (measured with Keystone 30).
                return keystone_error(404, f"Could not find Application Credential: {wanted.get('id')}.", "Not Found")
            if credential.secret != wanted["secret"]:
                return UNAUTHORIZED
            user_id, project_id = credential.user_id, credential.project_id
            if self.totp:  # the user's multi-factor rules apply to their credentials too
                return self.receipt(user_id, methods)
        elif "token" in methods:
            user_id = self.tokens[ident["token"]["id"]][0]
            project_id = self.scope(auth.get("scope"))
        else:
            user_id = self.user(ident["password"]["user"])
            if user_id is None or self.users[user_id]["password"] != ident["password"]["user"]["password"]:
                return UNAUTHORIZED
            if "totp" in methods and ident["totp"]["user"]["passcode"] != PASSCODE:
                return UNAUTHORIZED
            if self.totp and "totp" not in methods:
                return self.receipt(user_id, methods)
            project_id = self.scope(auth.get("scope"))
        if project_id is not None and project_id not in self.users[user_id]["projects"]:
            return UNAUTHORIZED
        return self.issue(user_id, project_id, methods, credential)

    def user(self, named: Dict[str, Any]) -> Optional[str]:
        if "id" in named:
            return named["id"] if named["id"] in self.users else None
        domain = named.get("domain", {})
        return next((uid for uid, u in self.users.items() if u["name"] == named["name"]
                     and domain in ({"id": u["domain"]}, {"name": "Default"})), None)

    def scope(self, scope: Any) -> Optional[str]:
        if scope in (None, "unscoped"):
            return None
        project = scope["project"]
        if "id" in project:
            return project["id"]
        return next((pid for pid, name in self.projects.items() if name == project["name"]), "unknown")

    def project(self, project_id: str) -> Dict[str, Any]:
        return {"id": project_id, "name": self.projects[project_id], "domain": {"id": "default", "name": "Default"}}

    def issue(self, user_id: str, project_id: Optional[str], methods: List[str],
              credential: Optional[Credential]) -> Reply:
        now = NOW + self.offset
        body: Dict[str, Any] = {"token": {
            "methods": methods, "audit_ids": ["a"], "issued_at": isotime(now), "expires_at": isotime(now + self.lifetime),
            "user": {"id": user_id, "name": self.users[user_id]["name"], "domain": {"id": "default", "name": "Default"}}}}
        if project_id is not None:
            body["token"]["project"] = self.project(project_id)
        if credential is not None:
            body["token"]["application_credential"] = {"id": credential.id, "name": credential.name, "restricted": True}
        if self.tamper:
            self.tamper(body["token"])
        token = f"tok-{next(self._ids)}"
        self.tokens[token] = (user_id, project_id)
        return 201, body, {"X-Subject-Token": token}

    def receipt(self, user_id: str, methods: List[str]) -> Reply:
        now = NOW + self.offset
        return 401, {"receipt": {"methods": methods, "user": {"id": user_id, "name": "alice"},
                                 "issued_at": isotime(now), "expires_at": isotime(now + 300)},
                     "required_auth_methods": [["password", "totp"]]}, {"Openstack-Auth-Receipt": "receipt-1"}


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def fake(monkeypatch, tmp_path) -> Iterator[FakeKeystone]:
    """The fake Keystone on requests' transport, in an environment of no OS_* variables and no
    clouds.yaml of the machine's own. Every test also promises that no request went out twice."""
    import os

    for name in [v for v in os.environ if v.startswith(("OS_", "KUBECTL_CAAS_", "KUBERNETES_EXEC_INFO"))] + \
            ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "no-clouds.yaml"))
    monkeypatch.setenv("OS_CLIENT_SECURE_FILE", str(tmp_path / "no-secure.yaml"))
    monkeypatch.setattr("time.sleep", lambda seconds: pytest.fail("slept: a retry happened"))
    server = FakeKeystone()
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send",
                        lambda adapter, request, **kwargs: server.send(adapter, request, **kwargs))
    yield server
    sent = [s.key() for s in server.requests]
    assert len(sent) == len(set(sent)), "a request was sent twice"


class Person:
    """The fake terminal: answers prompts from a list and records them; stderr collected."""

    def __init__(self, *answers: Optional[str], isatty: bool = True) -> None:
        self.answers = list(answers)
        self.prompts: List[str] = []
        self.stderr = io.StringIO()
        self.tty = isatty

    def ask(self, prompt: str) -> Optional[str]:
        self.prompts.append(prompt)
        assert self.answers, f"asked more than expected: {prompt!r}"
        return self.answers.pop(0)

    def notices(self) -> List[str]:
        return self.stderr.getvalue().splitlines()


def runtime(person: Optional[Person] = None, **environ: str) -> Runtime:
    person = person or Person()
    return Runtime(environ=dict(environ), clock=lambda: NOW, monotonic=lambda: NOW, sleep=lambda s: None,
                   stderr=person.stderr, ask_secret=person.ask, isatty=lambda: person.tty)


def previous_entry(credential_id: Optional[str] = "cred-remembered", credential_expires: float = NOW + 86400,
                   **extra: Any) -> Dict[str, Any]:
    """A cache entry whose token has expired, as a password login with --remember-for wrote it."""
    entry: Dict[str, Any] = {
        "version": 1, "plugin": "openstack", "auth_url": AUTH_URL, "method": "password",
        "user": {"id": "u-alice", "name": "alice", "domain_id": "default", "domain_name": "Default"},
        "project": {"id": "p-cms", "name": "CMS", "domain_id": "default"},
        "tokens": {"keystone": {"value": "old", "expires_at": NOW - 10, "issued_at": NOW - 10 - LIFETIME}},
        "clock_offset": 0.0, "remember_seconds": REMEMBER}
    if credential_id:
        entry["application_credential"] = {"id": credential_id, "secret": "remembered-secret",
                                           "expires_at": credential_expires, "created_by_login": True,
                                           "user_id": "u-alice"}
    entry.update(extra)
    return entry


def renew(rt: Runtime, entry: Optional[Dict[str, Any]] = None, interactive: bool = False, **values: Any):
    return keystone.renew({**VALUES, **values}, entry, rt, interactive=interactive)


def app_credential_env(cid: str = "cred-env", secret: str = "env-secret") -> Dict[str, str]:
    return {"OS_APPLICATION_CREDENTIAL_ID": cid, "OS_APPLICATION_CREDENTIAL_SECRET": secret}


@pytest.fixture
def clouds_yaml(tmp_path, monkeypatch):
    """write(auth, auth_type=None): a real clouds.yaml with cloud "openstack", found through
    OS_CLIENT_CONFIG_FILE (openstacksdk reads os.environ, the Runtime's environ names it too)."""

    def write(auth: Dict[str, Any], auth_type: Optional[str] = None) -> Dict[str, str]:
        entry: Dict[str, Any] = {"auth": {"auth_url": AUTH_URL, **auth}, "identity_api_version": 3}
        if auth_type:
            entry["auth_type"] = auth_type
        path = tmp_path / "clouds.yaml"
        path.write_text(json.dumps({"clouds": {"openstack": entry}}))  # JSON is YAML
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
        return {"OS_CLIENT_CONFIG_FILE": str(path)}
    return write


def token_of(entry: Dict[str, Any]) -> Dict[str, Any]:
    return entry["tokens"]["keystone"]


# ---------------------------------------------------------------------------------------------
# The renewal order: each source only when the ones before are absent (or, remembered, refused)


def test_the_remembered_credential_renews_before_every_other_source(fake, clouds_yaml):
    fake.add_credential("cred-remembered", "remembered-secret")
    fake.add_credential("cred-env", "env-secret")
    environ = clouds_yaml({"application_credential_id": "cred-env", "application_credential_secret": "env-secret"},
                          "v3applicationcredential")
    rt = runtime(Person(), OS_PASSWORD=PASSWORD, **app_credential_env(), **environ)
    entry = renew(rt, previous_entry(), interactive=True, os_cloud="openstack")  # nobody is asked: Person()
    assert fake.logins() == ["application_credential cred-remembered"]
    assert entry["application_credential"]["id"] == "cred-remembered"
    assert (entry["method"], entry["remember_seconds"]) == ("password", REMEMBER)  # kept from the login
    assert token_of(entry)["value"].startswith("tok-")


def test_a_deleted_remembered_credential_falls_through_to_the_environment_with_a_notice(fake):
    fake.add_credential("cred-env", "env-secret")  # cred-remembered was deleted in the dashboard
    person = Person()
    entry = renew(runtime(person, OS_PASSWORD=PASSWORD, **app_credential_env()), previous_entry())
    assert fake.logins() == ["application_credential cred-remembered", "application_credential cred-env"]
    refused = fake.requests[0]
    assert refused.status == 404 and "Could not find Application Credential" in refused.answer["error"]["message"]
    assert person.notices() == [NO_LONGER_WORKS]
    assert "application_credential" not in entry and entry["method"] == "application_credential"


def test_a_remembered_credential_past_its_recorded_expiry_is_not_even_sent(fake):
    person = Person()
    entry = renew(runtime(person, OS_PASSWORD=PASSWORD), previous_entry(credential_expires=NOW - 1))
    assert fake.logins() == ["password"]
    assert person.notices() == [NO_LONGER_WORKS]
    assert "application_credential" not in entry


def test_the_environments_credential_comes_before_the_clouds_yaml_entrys(fake, clouds_yaml):
    fake.add_credential("cred-env", "env-secret")
    fake.add_credential("cred-cloud", "cloud-secret")
    environ = clouds_yaml({"application_credential_id": "cred-cloud", "application_credential_secret": "cloud-secret"},
                          "v3applicationcredential")
    renew(runtime(None, OS_PASSWORD=PASSWORD, **app_credential_env(), **environ), None, os_cloud="openstack")
    assert fake.logins() == ["application_credential cred-env"]


def test_the_clouds_yaml_entrys_credential_comes_before_os_password(fake, clouds_yaml):
    fake.add_credential("cred-cloud", "cloud-secret")
    environ = clouds_yaml({"application_credential_id": "cred-cloud", "application_credential_secret": "cloud-secret"},
                          "v3applicationcredential")
    entry = renew(runtime(None, OS_PASSWORD=PASSWORD, **environ), previous_entry(None), os_cloud="openstack")
    assert fake.logins() == ["application_credential cred-cloud"]
    assert entry["method"] == "application_credential" and entry["project"]["name"] == "CMS"


def test_os_password_comes_before_the_clouds_yaml_password_and_the_prompt(fake, clouds_yaml):
    environ = clouds_yaml({"username": "alice", "password": "stale-password-in-the-file"})
    entry = renew(runtime(Person(), OS_PASSWORD=PASSWORD, **environ), previous_entry(None), interactive=True,
                  os_cloud="openstack")
    assert fake.logins() == ["password"]
    assert fake.requests[0].body["auth"]["identity"]["password"]["user"]["password"] == PASSWORD
    # A password from the environment is there again next time: no application credential is made.
    assert fake.sent("POST", "/users/u-alice/application_credentials") == []
    assert "application_credential" not in entry and entry["remember_seconds"] == REMEMBER


def test_the_clouds_yaml_password_serves_when_os_password_is_unset(fake, clouds_yaml):
    environ = clouds_yaml({"username": "alice", "password": PASSWORD})
    entry = renew(runtime(Person(), **environ), previous_entry(None), interactive=True, os_cloud="openstack")
    assert fake.logins() == ["password"] and entry["method"] == "password"


def test_only_a_person_at_the_terminal_is_asked_once_and_the_login_is_remembered_again(fake):
    person = Person(PASSWORD)
    entry = renew(runtime(person), previous_entry(None), interactive=True)
    assert person.prompts == [PASSWORD_PROMPT]
    assert fake.logins() == ["password"]
    (created,) = fake.credentials.values()
    assert entry["application_credential"] == {
        "id": created.id, "secret": created.secret, "name": created.name, "expires_at": NOW + REMEMBER,
        "user_id": "u-alice", "created_by_login": True}
    assert entry["method"] == "password" and person.notices() == []


def test_no_remember_at_login_means_a_prompted_renewal_creates_no_credential(fake):
    entry = renew(runtime(Person(PASSWORD)), previous_entry(None, remember_seconds=0), interactive=True)
    assert fake.credentials == {} and "application_credential" not in entry


@pytest.mark.parametrize("remembered", [None, "cred-deleted"], ids=["nothing-remembered", "remembered-deleted"])
def test_with_nothing_left_and_nobody_to_ask_renewal_is_login_required_exit_5(fake, remembered):
    person = Person()
    with pytest.raises(LoginRequired) as caught:
        renew(runtime(person), previous_entry(remembered), interactive=False)
    assert str(caught.value) == ("the Keystone token for user alice in domain default, project CMS has expired and "
                                 "there is nothing to renew it with; run `kubectl openstack login`")
    assert caught.value.exit_code == EXIT_LOGIN_REQUIRED == 5
    assert person.prompts == []
    assert fake.logins() == (["application_credential cred-deleted"] if remembered else [])


def test_a_prompt_nobody_answers_is_login_required(fake):
    with pytest.raises(LoginRequired):
        renew(runtime(Person(None)), previous_entry(None), interactive=True)
    assert fake.requests == []


def test_a_refused_environment_credential_stops_the_renewal_before_the_password(fake):
    fake.add_credential("cred-env", "the-real-secret")
    with pytest.raises(AuthError) as caught:
        renew(runtime(Person(), OS_PASSWORD=PASSWORD, **app_credential_env()), previous_entry(None), interactive=True)
    assert str(caught.value) == ("Keystone rejected application credential cred-env (HTTP 401); it may have expired "
                                 "or been deleted; run `kubectl openstack login`")
    assert caught.value.exit_code == EXIT_AUTH
    assert fake.logins() == ["application_credential cred-env"]


def test_a_context_made_with_its_own_credential_renews_only_with_that_credential(fake):
    fake.add_credential("cred-env", "env-secret")
    with pytest.raises(LoginRequired) as caught:
        renew(runtime(Person(), OS_PASSWORD=PASSWORD, **app_credential_env()), previous_entry(None), interactive=True,
              application_credential_id="cred-own")
    assert str(caught.value) == ("no secret for application credential cred-own; set OS_APPLICATION_CREDENTIAL_SECRET, "
                                 "or run `kubectl openstack login`")
    assert fake.requests == []  # neither another credential nor the password was sent


def test_an_environment_credential_for_another_project_is_refused_with_the_unset_hint(fake):
    fake.add_credential("cred-env", "env-secret", project_id="p-atlas")
    with pytest.raises(AuthError) as caught:
        renew(runtime(Person(), OS_PASSWORD=PASSWORD, **app_credential_env()), previous_entry(None), interactive=True)
    assert str(caught.value) == ("the application credential is for project ATLAS, not CMS; unset "
                                 "OS_APPLICATION_CREDENTIAL_ID/_SECRET or use a credential for this project")
    assert caught.value.exit_code == EXIT_AUTH
    assert fake.logins() == ["application_credential cred-env"]


def test_an_environment_credential_named_with_the_users_name_is_found_by_name(fake):
    fake.add_credential("cred-kube", "env-secret", name="kube")
    environ = {"OS_APPLICATION_CREDENTIAL_NAME": "kube", "OS_APPLICATION_CREDENTIAL_SECRET": "env-secret"}
    entry = renew(runtime(None, **environ), None)
    (sent,) = fake.requests
    assert sent.body["auth"]["identity"]["application_credential"] == {
        "name": "kube", "secret": "env-secret", "user": {"name": "alice", "domain": {"id": "default"}}}
    assert entry["project"]["id"] == "p-cms"


# ---------------------------------------------------------------------------------------------
# Multi-factor rules: password plus TOTP


@pytest.mark.parametrize("interactive", [False, True], ids=["no-terminal", "at-a-terminal"])
def test_a_passcode_from_os_passcode_completes_the_login_and_nobody_is_asked(fake, interactive):
    fake.totp = True
    person = Person()  # asking would fail the test
    entry = renew(runtime(person, OS_PASSWORD=PASSWORD, OS_PASSCODE=PASSCODE), previous_entry(None),
                  interactive=interactive)
    assert fake.logins() == ["password", "password+totp"]
    assert person.prompts == [] and fake.credentials == {}
    assert entry["method"] == "password"


def test_at_a_terminal_the_passcode_is_asked_once_and_the_credential_mfa_refuses_is_deleted_at_once(fake):
    fake.totp = True
    person = Person(PASSWORD, PASSCODE)
    entry = renew(runtime(person), previous_entry(None), interactive=True)
    assert person.prompts == [PASSWORD_PROMPT, PASSCODE_PROMPT]
    (cid,) = fake.created
    assert fake.logins() == ["password", "password+totp", f"application_credential {cid}"]
    assert [(s.method, s.path) for s in fake.requests][-1] == ("DELETE", f"/users/u-alice/application_credentials/{cid}")
    assert fake.credentials == {}  # nothing left on the server that could never be used
    assert person.notices() == [f"kubectl-openstack: {keystone.MFA_NOTICE}"]
    assert "application_credential" not in entry and token_of(entry)["value"].startswith("tok-")


def test_without_a_passcode_or_a_terminal_mfa_is_an_auth_error_with_the_way_out(fake):
    fake.totp = True
    with pytest.raises(AuthError) as caught:
        renew(runtime(Person(), OS_PASSWORD=PASSWORD), previous_entry(None), interactive=False)
    assert str(caught.value) == ("Keystone requires a one-time passcode (TOTP) for user alice in domain default; "
                                 "set OS_PASSCODE, or run the command at a terminal to be asked for it")
    assert fake.logins() == ["password"]


def test_a_wrong_passcode_is_asked_for_only_once(fake):
    fake.totp = True
    person = Person(PASSWORD, "000000")
    with pytest.raises(AuthError) as caught:
        renew(runtime(person), previous_entry(None), interactive=True)
    assert str(caught.value) == ("Keystone rejected the passcode for user alice in domain default (HTTP 401); use the "
                                 "current code from your authenticator app")
    assert person.prompts == [PASSWORD_PROMPT, PASSCODE_PROMPT]


def test_a_site_that_forbids_credentials_still_renews_and_says_why_it_will_ask_again(fake):
    fake.forbid_credentials = True
    person = Person(PASSWORD)
    entry = renew(runtime(person), previous_entry(None), interactive=True)
    assert person.notices() == [f"kubectl-openstack: {keystone.FORBIDDEN_NOTICE}"]
    assert "application_credential" not in entry and token_of(entry)["value"].startswith("tok-")


# ---------------------------------------------------------------------------------------------
# What Keystone answers is checked


@pytest.mark.parametrize("offset", [3 * 3600.0, -2 * 3600.0], ids=["keystone-ahead", "keystone-behind"])
def test_the_token_expiry_is_kept_in_local_time(fake, offset):
    fake.offset, fake.lifetime = offset, 9 * 3600.0
    entry = renew(runtime(None, OS_PASSWORD=PASSWORD), previous_entry(None))
    assert token_of(entry)["issued_at"] == NOW
    assert token_of(entry)["expires_at"] == pytest.approx(NOW + 9 * 3600.0, abs=1e-3)
    assert entry["clock_offset"] == pytest.approx(offset, abs=1e-3)


def test_a_new_credential_expires_by_keystones_clock_and_is_remembered_by_ours(fake):
    fake.offset = 3600.0
    entry = renew(runtime(Person(PASSWORD)), previous_entry(None), interactive=True)
    (created,) = fake.sent("POST", "/users/u-alice/application_credentials")
    assert created.body["application_credential"]["expires_at"] == isotime(NOW + 3600.0 + REMEMBER)[:19]
    assert created.body["application_credential"]["unrestricted"] is False
    assert entry["application_credential"]["expires_at"] == NOW + REMEMBER


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59.000000Z", "2400-01-01T00:00:00.000000Z"])
def test_an_absurd_token_lifetime_is_refused_and_nothing_else_is_tried(fake, expires_at):
    fake.add_credential("cred-remembered", "remembered-secret")
    fake.tamper = lambda token: token.update(expires_at=expires_at)
    with pytest.raises(CaasError) as caught:
        renew(runtime(None, OS_PASSWORD=PASSWORD), previous_entry())
    assert "answer to the application credential login gives the token an absurd lifetime" in str(caught.value)
    assert fake.logins() == ["application_credential cred-remembered"]  # not a refusal: no fall-through


def test_an_answer_for_another_user_is_refused_and_the_password_never_sent(fake):
    fake.add_credential("cred-remembered", "remembered-secret")
    fake.tamper = lambda token: token["user"].update(id="u-mallory", name="mallory")
    with pytest.raises(CaasError) as caught:
        renew(runtime(None, OS_PASSWORD=PASSWORD), previous_entry())
    assert str(caught.value) == ("Keystone's answer to the application credential login is a token for user mallory, "
                                 "not alice; check --auth-url: a Keystone must not answer for another user")
    assert caught.value.exit_code == EXIT_AUTH
    assert fake.logins() == ["application_credential cred-remembered"]


def test_an_answer_for_another_project_is_refused(fake):
    fake.tamper = lambda token: token.update(project=fake.project("p-atlas"))
    with pytest.raises(CaasError) as caught:
        renew(runtime(None, OS_PASSWORD=PASSWORD), previous_entry(None))
    assert str(caught.value) == ("Keystone's answer to the password login is a token for project ATLAS (p-atlas), not "
                                 "CMS; check --auth-url: a Keystone must not answer for another project")
    assert caught.value.exit_code == EXIT_AUTH


def test_an_unscoped_answer_to_a_scoped_login_is_refused(fake):
    fake.tamper = lambda token: token.pop("project", None)
    with pytest.raises(CaasError) as caught:
        renew(runtime(None, OS_PASSWORD=PASSWORD), previous_entry(None))
    assert "is a token scoped to no project, not to CMS" in str(caught.value)
    assert caught.value.exit_code == EXIT_AUTH


# ---------------------------------------------------------------------------------------------
# Redirects and repeats


@pytest.mark.parametrize("remembered", [True, False], ids=["remembered-credential", "os-password"])
def test_a_redirect_is_refused_and_no_secret_follows_it(fake, remembered):
    fake.add_credential("cred-remembered", "remembered-secret")
    moved = "https://elsewhere.example.org/identity/v3/auth/tokens?nocatalog"
    fake.script("POST", "/auth/tokens", (307, None, {"Location": moved}))
    with pytest.raises(CaasError) as caught:
        renew(runtime(None, OS_PASSWORD=PASSWORD), previous_entry("cred-remembered" if remembered else None))
    assert caught.value.exit_code == EXIT_NETWORK
    assert str(caught.value).startswith(f"Keystone at {AUTH_URL} redirects to {moved} (HTTP 307); "
                                        "use --auth-url https://elsewhere.example.org/identity/v3")
    assert len(fake.requests) == 1  # not repeated there (the fake fails any request off AUTH_URL), nor here


def test_creating_a_credential_is_not_repeated_after_a_server_error(fake):
    # A POST that failed may still have created one: a second would leave an orphan on the server.
    fake.script("POST", "/users/u-alice/application_credentials",
                keystone_error(503, "Service Unavailable", "Service Unavailable"))
    ks = keystone.Keystone(keystone.Identity(**VALUES), runtime(None))
    access = ks.password_login(PASSWORD)
    with pytest.raises(CaasError) as caught:
        keystone.remember_login(ks, access, REMEMBER)
    assert "HTTP 503 to creating an application credential" in str(caught.value)
    assert len(fake.sent("POST", "/users/u-alice/application_credentials")) == 1


# ---------------------------------------------------------------------------------------------
# Through get-token: the plugin record reaches this backend


def test_get_token_renews_through_the_package_and_saves_the_renewed_entry(fake, monkeypatch, capsys):
    fake.add_credential("cred-remembered", "remembered-secret")
    path = OPENSTACK.entry_path(VALUES)
    cache.write_entry(path, previous_entry())
    monkeypatch.setenv("KUBERNETES_EXEC_INFO", json.dumps({"kind": "ExecCredential", "spec": {"interactive": False},
                                                           "apiVersion": "client.authentication.k8s.io/v1"}))
    args = [part for name, value in VALUES.items() for part in (f"--{name.replace('_', '-')}", value)]
    code = exec_plugin.get_token(OPENSTACK, args, runtime(None))
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    token = json.loads(out)["status"]["token"]
    assert cache.read_entry(path)["tokens"]["keystone"]["value"] == token
    assert fake.logins() == ["application_credential cred-remembered"]


@pytest.mark.parametrize("expires_at", ["soon", [1], {"at": 1}], ids=["text", "list", "mapping"])
def test_a_remembered_credential_with_an_unreadable_expiry_is_still_tried(fake, expires_at):
    # An expiry we cannot read is no reason to crash, nor to drop a credential Keystone may still take.
    fake.add_credential("cred-remembered", "remembered-secret")
    entry = renew(runtime(None), previous_entry(credential_expires=expires_at))
    assert fake.logins() == ["application_credential cred-remembered"]
    assert token_of(entry)["value"].startswith("tok-")


def test_an_environment_credential_for_a_namesake_project_in_another_domain_is_refused(fake):
    fake.add_credential("cred-env", "env-secret")
    fake.tamper = lambda token: token["project"]["domain"].update(id="d-physics", name="Physics")
    with pytest.raises(AuthError) as caught:
        renew(runtime(Person(), **app_credential_env()), previous_entry(None))
    assert str(caught.value).startswith("the application credential is for project CMS in domain d-physics, not CMS;")


def test_an_environment_credential_matches_its_project_name_whatever_the_case(fake):
    fake.add_credential("cred-env", "env-secret")
    entry = renew(runtime(None, **app_credential_env()), previous_entry(None), project="cms")
    assert entry["project"]["id"] == "p-cms"


def test_a_prompted_renewal_keeps_its_token_when_keystone_fails_to_remember_the_login(fake):
    fake.script("POST", "/users/u-alice/application_credentials", (503, {"error": {"message": "busy"}}, {}))
    person = Person(PASSWORD)
    entry = renew(runtime(person), previous_entry(None), interactive=True)
    assert entry["tokens"]["keystone"]["value"] and "application_credential" not in entry
    assert any("could not remember this login" in line for line in person.notices())
