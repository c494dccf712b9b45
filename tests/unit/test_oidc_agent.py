"""kubectl_caas.oidc.agent against a fake oidc-agent: a UNIX socket served by a thread in the test.

The real agent (tests/integration/test_iam_oidc_agent.py) cannot be made to misbehave; here it
can: answer, refuse, talk nonsense, answer far too much, or never answer. Pinned: the request as
liboidcagent writes it, one line naming oidc-agent and what to run for each way it fails, the
time and size bounds, the expiry taken from the token itself, and get-token's renewal (exit 5 on
any failure, the cache hit not asking the agent again).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest

from kubectl_caas import exec_plugin, oidc
from kubectl_caas.errors import EXIT_LOGIN_REQUIRED, AuthError, CaasError, LoginRequired, NetworkError, UsageError
from kubectl_caas.oidc import agent
from kubectl_caas.plugins import IAM
from kubectl_caas.runtime import Runtime

ISSUER = "https://iam.example.org/"
ACCOUNT = "infn"


def jwt(**claims: Any) -> str:
    """An unsigned JWT-shaped token (the agent's tokens are only read, never verified, here)."""
    def part(data: Dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def success(token: Optional[str] = None, expires_at: float = 0, issuer: str = ISSUER) -> bytes:
    now = int(time.time())
    token = token or jwt(iss=ISSUER, sub="alice-sub", preferred_username="alice", iat=now, exp=now + 1200,
                         groups=["physics"])
    return json.dumps({"status": "success", "access_token": token, "issuer": issuer,
                       "expires_at": expires_at or now + 1200}).encode()


class FakeAgent:
    """Listens on a UNIX socket; `behave(request, conn)` answers each connection (or does not).
    The requests it got are kept, parsed."""

    def __init__(self, behave: Callable[[Dict[str, Any], socket.socket], None]):
        self.dir = tempfile.mkdtemp(prefix="oidc-agent-test-")  # short: socket paths are limited to ~107 bytes
        self.path = os.path.join(self.dir, "agent.sock")
        self.behave = behave
        self.requests: List[Dict[str, Any]] = []
        self.stopping = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.server.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                data = b""
                conn.settimeout(5)
                while True:  # the client sends one JSON object, in one piece or several
                    chunk = conn.recv(65536)
                    data += chunk
                    try:
                        request = json.loads(data)
                        break
                    except ValueError:
                        if not chunk:
                            request = {"unparsable": data.decode(errors="replace")}
                            break
                self.requests.append(request)
                try:
                    self.behave(request, conn)
                except OSError:  # the client gave up on us
                    pass

    def stop(self) -> None:
        self.stopping.set()
        self.server.close()
        self.thread.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def environ(self) -> Dict[str, str]:
        return {"OIDC_SOCK": self.path}


@pytest.fixture
def fake_agent():
    started: List[FakeAgent] = []

    def start(behave: Callable[[Dict[str, Any], socket.socket], None]) -> FakeAgent:
        started.append(FakeAgent(behave))
        return started[-1]
    yield start
    for one in started:
        one.stop()


def answers(data: bytes, close: bool = True) -> Callable[[Dict[str, Any], socket.socket], None]:
    def behave(request: Dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(data)
        if not close:  # hold the connection open until the client goes: the answer must be enough
            conn.settimeout(5)
            conn.recv(1)
    return behave


def ask(agent_: FakeAgent, **kwargs: Any) -> agent.AgentToken:
    return agent.access_token(ACCOUNT, agent_.environ, **kwargs)


# -- the protocol ---------------------------------------------------------------------------------

def test_request_is_what_liboidcagent_sends_and_the_answer_is_read(fake_agent):
    fake = fake_agent(answers(success(expires_at=12345678901)))
    token = ask(fake, audience="https://kube.example.org", scope="openid groups")
    assert fake.requests == [{"request": "access_token", "account": ACCOUNT, "min_valid_period": agent.MIN_VALID_PERIOD,
                              "application_hint": "kubectl-iam", "audience": "https://kube.example.org",
                              "scope": "openid groups"}]
    assert token.issuer == ISSUER and token.expires_at == 12345678901 and token.value.count(".") == 2


def test_no_audience_or_scope_is_sent_when_none_is_asked_for(fake_agent):
    # With either, oidc-agent 4 skips its own token cache and refreshes every time.
    fake = fake_agent(answers(success()))
    ask(fake)
    assert set(fake.requests[0]) == {"request", "account", "min_valid_period", "application_hint"}


def test_an_answer_on_a_connection_left_open_is_enough(fake_agent):
    fake = fake_agent(answers(success(), close=False))
    started = time.monotonic()
    assert ask(fake, timeout=10).issuer == ISSUER
    assert time.monotonic() - started < 5


def test_an_answer_in_pieces_is_put_together(fake_agent):
    data = success()

    def behave(request: Dict[str, Any], conn: socket.socket) -> None:
        for i in range(0, len(data), 7):
            conn.sendall(data[i:i + 7])
            time.sleep(0.001)
    assert ask(fake_agent(behave)).issuer == ISSUER


@pytest.mark.parametrize("error, kind, words", [
    ("No account configured with that short name", UsageError, ["oidc-agent has no account 'infn'", "oidc-gen infn"]),
    ("account not loaded", AuthError, ["not loaded", "oidc-add infn"]),
    ("invalid_grant: refresh token expired", AuthError, ["oidc-agent refused a token for account 'infn'",
                                                         "invalid_grant: refresh token expired", "oidc-token infn"]),
])
def test_a_refusal_is_one_line_naming_oidc_agent_and_what_to_run(fake_agent, error, kind, words):
    fake = fake_agent(answers(json.dumps({"status": "failure", "error": error}).encode()))
    with pytest.raises(kind) as caught:
        ask(fake)
    for word in words:
        assert word in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_agents_help_text_is_kept_on_one_line_and_escaped_when_shown(fake_agent, capsys):
    info = "We cannot get these scopes.\n\t$ oidc-gen -m infn\n\x1b[31mred\x1b[0m"
    fake = fake_agent(answers(json.dumps({"status": "failure", "error": "invalid_scope: no", "info": info}).encode()))
    with pytest.raises(AuthError) as caught:
        ask(fake)
    assert "We cannot get these scopes. $ oidc-gen -m infn" in str(caught.value)
    from kubectl_caas.errors import report

    report("kubectl-iam", caught.value)
    shown = capsys.readouterr().err
    assert shown.count("\n") == 1 and "\x1b" not in shown and "\\x1b[31mred" in shown


@pytest.mark.parametrize("data, words", [
    (b"", "answered nothing"),
    (b"hello, this is not JSON", "not a JSON object"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'{"status": "accepted"}', "status 'accepted'"),
    (b'{"status": "success", "issuer": "https://x/"}', "no usable access token"),
    (b'{"status": "success", "access_token": "a\\u001bb", "issuer": "https://x/"}', "no usable access token"),
    (b'{"status": "success", "access_token": "abc"}', "names no issuer"),
])
def test_garbage_is_refused_in_one_line(fake_agent, data, words):
    with pytest.raises(CaasError) as caught:
        ask(fake_agent(answers(data)))
    assert words in str(caught.value) and "oidc-agent" in str(caught.value)


def test_an_oversized_answer_is_refused_at_one_mebibyte(fake_agent):
    def behave(request: Dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(b'{"status": "success", "access_token": "' + b"a" * (3 << 20))
    fake = fake_agent(behave)
    with pytest.raises(CaasError) as caught:
        ask(fake, timeout=20)
    assert "larger than 1 MiB" in str(caught.value)


def test_an_agent_that_never_answers_is_given_up_on_in_time(fake_agent):
    hold = threading.Event()
    fake = fake_agent(lambda request, conn: hold.wait(10))
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        ask(fake, timeout=0.5)
    hold.set()
    assert time.monotonic() - started < 3
    assert "oidc-agent did not answer within 0.5 s" in str(caught.value)


def test_an_agent_that_trickles_forever_is_given_up_on_in_time(fake_agent):
    # Every read gets a little, so no single read times out: the limit is the whole exchange's.
    def behave(request: Dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(b"{")
        for _ in range(200):
            conn.sendall(b" ")
            time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(NetworkError):
        ask(fake_agent(behave), timeout=1)
    assert time.monotonic() - started < 4


def test_the_time_limit_comes_from_kubectl_caas_timeout_and_stays_inside_a_running_budget():
    from kubectl_caas import http

    assert agent.time_limit({"KUBECTL_CAAS_TIMEOUT": "7"}) == 7
    with http.Deadline("outer", "", 3):
        assert 2 < agent.time_limit({"KUBECTL_CAAS_TIMEOUT": "7"}) < 3


# -- where the agent is ---------------------------------------------------------------------------

def test_oidc_sock_unset_says_how_to_start_the_agent():
    with pytest.raises(UsageError) as caught:
        agent.access_token(ACCOUNT, {})
    assert "oidc-agent is not running here (OIDC_SOCK is not set)" in str(caught.value)
    assert "eval $(oidc-agent-service use)" in str(caught.value) and "oidc-add infn" in str(caught.value)


def test_a_socket_path_that_is_not_a_socket_is_refused(tmp_path):
    regular = tmp_path / "not-a-socket"
    regular.write_text('{"status": "success"}')
    for path in (regular, tmp_path):
        with pytest.raises(UsageError) as caught:
            agent.access_token(ACCOUNT, {"OIDC_SOCK": str(path)})
        assert f"OIDC_SOCK names {path}, which is not a socket" in str(caught.value)


def test_a_socket_of_another_user_is_refused_before_any_request(fake_agent, monkeypatch):
    # Seen as a person with another uid than the socket's owner (whoever runs the tests).
    planted = fake_agent(answers(b'{"status":"success","access_token":"theirs","expires_at":0}'))
    monkeypatch.setattr(agent.os, "getuid", lambda: os.stat(planted.path).st_uid + 1)
    with pytest.raises(UsageError) as caught:
        ask(planted)
    assert "a socket that belongs to another user" in str(caught.value)
    assert "eval $(oidc-agent-service use)" in str(caught.value)
    assert planted.requests == []


def test_a_missing_or_dead_socket_means_the_agent_is_not_running(tmp_path):
    with pytest.raises(UsageError) as caught:
        agent.access_token(ACCOUNT, {"OIDC_SOCK": str(tmp_path / "gone")})
    assert "oidc-agent is not running" in str(caught.value) and "does not exist" in str(caught.value)
    directory = tempfile.mkdtemp(prefix="oidc-agent-test-")
    try:
        stale = os.path.join(directory, "stale.sock")
        left_behind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        left_behind.bind(stale)  # bound, never listening: what a killed agent leaves
        left_behind.close()
        with pytest.raises(UsageError) as caught:
            agent.access_token(ACCOUNT, {"OIDC_SOCK": stale})
        assert "nothing answers on its socket" in str(caught.value)
        assert "eval $(oidc-agent-service use)" in str(caught.value)
    finally:
        shutil.rmtree(directory)


# -- tokens and entries -----------------------------------------------------------------------------

def test_the_tokens_own_expiry_wins_over_the_agents():
    # oidc-agent 4 answers the expiry of the account's default token even for a token it made
    # with another audience or scope.
    now = 1_800_000_000.0
    token = agent.AgentToken(jwt(iat=now - 10, exp=now + 600), ISSUER, now + 3000)
    assert agent.token_window(token, now) == {"issued_at": now - 10, "expires_at": now + 600}


def test_an_opaque_token_takes_the_agents_expiry_or_five_minutes():
    now = 1_800_000_000.0
    assert agent.token_window(agent.AgentToken("opaque", ISSUER, now + 900), now)["expires_at"] == now + 900
    for unknown in (0, now - 5, now + 10 ** 12):
        assert agent.token_window(agent.AgentToken("opaque", ISSUER, unknown), now) == \
            {"issued_at": now, "expires_at": now + agent.UNKNOWN_LIFETIME}


def test_the_entry_holds_the_access_token_and_no_long_term_secret():
    now = time.time()
    token = agent.parse_answer(success(), ACCOUNT)
    entry = agent.entry_from_agent(ACCOUNT, token, now)
    assert entry["oidc_agent"] == ACCOUNT and entry["issuer"] == ISSUER
    assert set(entry["tokens"]) == {"access"} and entry["tokens"]["access"]["issuer"] == ISSUER
    assert entry["claims"] == {"sub": "alice-sub", "preferred_username": "alice", "groups": ["physics"]}
    assert "refresh_token" not in entry and "client_secret" not in entry


def test_a_client_for_an_agent_account_needs_no_client_id_and_hands_kubectl_the_access_token():
    client = oidc.Client(issuer=ISSUER, oidc_agent=ACCOUNT)
    assert client.bearer == "access" and client.client_id is None
    args = client.exec_args()
    assert args[args.index("--oidc-agent") + 1] == ACCOUNT and args[args.index("--token") + 1] == "access"
    assert IAM.bearer(oidc.Client.from_values(client.values()).values()) == "access"
    with pytest.raises(UsageError, match="access tokens only"):
        oidc.Client(issuer=ISSUER, oidc_agent=ACCOUNT, token="id")
    for bad in ("-x", "a/b", "a\x1bb", ""):
        if bad:
            with pytest.raises(UsageError):
                oidc.Client(issuer=ISSUER, oidc_agent=bad)
    with pytest.raises(UsageError):
        oidc.Client(issuer=ISSUER)  # neither a client id nor an agent account


# -- get-token -------------------------------------------------------------------------------------

ARGS = ["--issuer", ISSUER.rstrip("/"), "--token", "access", "--oidc-agent", ACCOUNT]


def get_token(environ: Dict[str, str], capsys) -> tuple:
    info = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                       "spec": {"interactive": False}})
    code = exec_plugin.get_token(IAM, list(ARGS), Runtime(environ=dict(environ, KUBERNETES_EXEC_INFO=info)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBECTL_CAAS_TIMEOUT", raising=False)
    return tmp_path / "cache"


def test_get_token_asks_the_agent_once_then_answers_from_the_cache(fake_agent, cache_dir, capsys):
    fake = fake_agent(answers(success()))
    code, out, err = get_token(fake.environ, capsys)
    assert code == 0, err
    credential = json.loads(out)
    assert credential["status"]["token"].count(".") == 2
    assert get_token(fake.environ, capsys)[0] == 0
    assert len(fake.requests) == 1
    (entry_file,) = cache_dir.glob("*.json")
    assert "refresh_token" not in json.loads(entry_file.read_text())


@pytest.mark.parametrize("environ_of, words", [
    (lambda fake: {}, "OIDC_SOCK is not set"),
    (lambda fake: {"OIDC_SOCK": fake.dir}, "which is not a socket"),
    (lambda fake: fake.environ, "oidc-agent has no account 'infn'"),
])
def test_get_token_failures_are_login_required_in_one_line(fake_agent, cache_dir, capsys, environ_of, words):
    fake = fake_agent(answers(b'{"status":"failure","error":"No account configured with that short name"}'))
    code, out, err = get_token(environ_of(fake), capsys)
    assert code == EXIT_LOGIN_REQUIRED and out == ""
    assert err.count("\n") == 1 and err.startswith("kubectl-iam: error: ") and words in err


def test_get_token_refuses_an_account_now_at_another_issuer(fake_agent, cache_dir, capsys):
    fake = fake_agent(answers(success(issuer="https://elsewhere.example.org/")))
    code, _out, err = get_token(fake.environ, capsys)
    assert code == EXIT_LOGIN_REQUIRED
    assert "is at https://elsewhere.example.org/, not https://iam.example.org" in err
    assert "kubectl iam login --oidc-agent infn" in err


def test_renewal_turns_every_agent_failure_into_login_required(fake_agent):
    hold = threading.Event()
    fake = fake_agent(lambda request, conn: hold.wait(10))
    values = {"issuer": ISSUER, "oidc_agent": ACCOUNT, "token": "access"}
    with pytest.raises(LoginRequired) as caught:
        agent.renew(values, Runtime(environ=dict(fake.environ, KUBECTL_CAAS_TIMEOUT="0.5")))
    hold.set()
    assert "did not answer within" in str(caught.value)
