"""oidc-agent as kubectl-iam's token source (`kubectl iam login --oidc-agent ACCOUNT`).

oidc-agent (https://github.com/indigo-dc/oidc-agent) keeps a person's OIDC accounts (their refresh
tokens, encrypted) and hands access tokens to applications over a UNIX socket named by OIDC_SOCK.
We speak its IPC protocol as liboidcagent does: one JSON request on a SOCK_STREAM connection,

    {"request": "access_token", "account": ACCOUNT, "min_valid_period": N,
     "application_hint": "kubectl-iam", "audience": ..., "scope": ...}

one JSON answer, `{"status": "success", "access_token", "issuer", "expires_at"}` or
`{"status": "failure", "error", "info"?}`. The agent reads the request with a single read, so it
goes out in one piece; it writes the answer with a single write and closes the connection, so
we read until the answer is a whole JSON object or the connection ends.

The agent may stop to ask its user something (a confirmation, a password to load an account,
a new sign-in when the refresh token died), so the whole exchange has a time limit, and the
answer a size limit. What it says in an error goes into our one line escaped.

We never see or keep the account's refresh token: renewing is asking the agent again. It hands
out access tokens only (the ID token would carry its account's client as audience, and it
answers no expiry for one), so the bearer is always the access token.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import time
from typing import TYPE_CHECKING, Any, Dict, Mapping, NamedTuple, Optional

from kubectl_caas import clock, http
from kubectl_caas.errors import AuthError, CaasError, LoginRequired, NetworkError, UsageError
from kubectl_caas.oidc.client import normalise_issuer
from kubectl_caas.oidc.tokens import KEPT_CLAIMS, _unverified_claims

if TYPE_CHECKING:
    from kubectl_caas.runtime import Runtime

SOCKET_VARIABLE = "OIDC_SOCK"
APPLICATION_HINT = "kubectl-iam"
MAX_ANSWER_BYTES = 1 << 20
# Ask for a token that lives at least this long, so kubectl can use it for a while: get-token
# renews at most a minute before expiry.
MIN_VALID_PERIOD = 180
# A token whose expiry neither the agent nor the token itself tells (the agent may answer 0).
UNKNOWN_LIFETIME = 300.0
# oidc-agent's own words (src/defines/ipc_values.h and its account database).
NO_SUCH_ACCOUNT = "no account configured with that short name"
NOT_LOADED = "account not loaded"
START_AGENT = "start it with `eval $(oidc-agent-service use)`"


class AgentToken(NamedTuple):
    """An access token from the agent: the token, the account's issuer, and when the token expires
    as the agent says (seconds since the epoch; 0 when it does not know)."""

    value: str
    issuer: str
    expires_at: float


def _brief(text: Any, limit: int = 300) -> str:
    """Agent text for our one line: whitespace runs collapsed (its help spans lines), shortened.
    terminal.show escapes any control character left."""
    words = " ".join(str(text).split())
    return words if len(words) <= limit else words[:limit] + "..."


def socket_path(environ: Mapping[str, str], account: str) -> str:
    """The agent's socket from OIDC_SOCK, once it is known to be a socket."""
    path = environ.get(SOCKET_VARIABLE)
    if not path:
        raise UsageError(f"oidc-agent is not running here ({SOCKET_VARIABLE} is not set)",
                         f"{START_AGENT}, then `oidc-add {account}`")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"oidc-agent is not running: its socket {path} ({SOCKET_VARIABLE}) does not exist",
                         START_AGENT) from None
    except OSError as exc:
        raise UsageError(f"cannot reach oidc-agent's socket {path} ({SOCKET_VARIABLE}): {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise UsageError(f"{SOCKET_VARIABLE} names {path}, which is not a socket",
                         f"point {SOCKET_VARIABLE} at oidc-agent's socket, or {START_AGENT}")
    # The agent's answer becomes the identity kubectl uses: only your own agent may give it (a
    # socket someone else put there would sign you in as whoever they like).
    if info.st_uid != os.getuid():
        raise UsageError(f"{SOCKET_VARIABLE} names {path}, a socket that belongs to another user (uid "
                         f"{info.st_uid}), not your oidc-agent's", START_AGENT)
    return path


def request(account: str, audience: Optional[str] = None, scope: Optional[str] = None,
            min_valid_period: int = MIN_VALID_PERIOD) -> bytes:
    """The access-token request, as liboidcagent writes it."""
    message: Dict[str, Any] = {"request": "access_token", "account": account, "min_valid_period": min_valid_period,
                               "application_hint": APPLICATION_HINT}
    if audience:
        message["audience"] = audience
    if scope:
        message["scope"] = scope
    return json.dumps(message, separators=(",", ":")).encode()


def exchange(path: str, message: bytes, timeout: float) -> bytes:
    """Send one request on a new connection and read the answer: one time limit for all of it
    (connecting, sending, every read) and MAX_ANSWER_BYTES for the answer."""
    end = time.monotonic() + timeout

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        return remaining

    answer = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(left())
            try:
                conn.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                raise UsageError(f"oidc-agent is not running: nothing answers on its socket {path} "
                                 f"({SOCKET_VARIABLE})", START_AGENT) from None
            conn.settimeout(left())
            conn.sendall(message)
            while len(answer) <= MAX_ANSWER_BYTES:
                conn.settimeout(left())
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
                if answer.rstrip().endswith(b"}") and _whole(answer):
                    return answer
    except socket.timeout:
        raise NetworkError(f"oidc-agent did not answer within {timeout:.3g} s (it may be waiting for you to "
                           "confirm, unlock or sign in again in another window)",
                           "answer oidc-agent's prompt, or check it with `oidc-agent --status`; "
                           "KUBECTL_CAAS_TIMEOUT sets the time limit in seconds") from None
    except OSError as exc:
        raise CaasError(f"talking to oidc-agent on {path} failed: {exc.strerror or exc}", START_AGENT) from None
    if len(answer) > MAX_ANSWER_BYTES:
        raise CaasError(f"oidc-agent's answer is larger than {MAX_ANSWER_BYTES >> 20} MiB; refusing it")
    return answer


def _whole(data: bytes) -> bool:
    try:
        http.parse_json(data)
    except ValueError:
        return False
    return True


def parse_answer(data: bytes, account: str) -> AgentToken:
    """The token in the agent's answer; one line naming oidc-agent and what to run otherwise."""
    try:
        answer = http.parse_json(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        what = "nothing" if not data.strip() else "something that is not a JSON object"
        raise CaasError(f"oidc-agent answered {what} to a token request for account {account!r}",
                        f"is {SOCKET_VARIABLE} oidc-agent's socket? `oidc-agent --status` shows the agent")
    status = answer.get("status")
    if status == "failure":
        raise _refusal(account, answer.get("error"), answer.get("info"))
    if status != "success":
        raise CaasError(f"oidc-agent answered status {_brief(status, 40)!r} to a token request for account "
                        f"{account!r}", "update oidc-agent, or report it")
    token, issuer = answer.get("access_token"), answer.get("issuer")
    if not isinstance(token, str) or not token or not token.isprintable() or len(token) > 16384:
        raise CaasError(f"oidc-agent's answer for account {account!r} holds no usable access token")
    if not isinstance(issuer, str) or not issuer:
        raise CaasError(f"oidc-agent's answer for account {account!r} names no issuer")
    return AgentToken(token, issuer, clock.finite_number(answer.get("expires_at")) or 0.0)


def _refusal(account: str, error: Any, info: Any) -> CaasError:
    text = _brief(error or "no reason given")
    if text.lower() == NO_SUCH_ACCOUNT:
        return UsageError(f"oidc-agent has no account {account!r}",
                          f"create it with `oidc-gen {account}` (`oidc-add -l` lists the accounts there are)")
    if text.lower() == NOT_LOADED:
        return AuthError(f"oidc-agent's account {account!r} is not loaded", f"load it with `oidc-add {account}`")
    return AuthError(f"oidc-agent refused a token for account {account!r}: {text}",
                     _brief(info) if info else f"check the account with `oidc-token {account}`")


def time_limit(environ: Mapping[str, str]) -> float:
    """KUBECTL_CAAS_TIMEOUT, and never beyond a time budget already running (get-token's): our own
    line should say what happened, a little before that budget's does."""
    total = http.total_timeout(environ)
    left = http.Deadline("oidc-agent", "", total).total  # less than `total` inside a running budget
    return total if left > total - 0.01 else max(0.5, left - 0.5)


def access_token(account: str, environ: Mapping[str, str], audience: Optional[str] = None,
                 scope: Optional[str] = None, timeout: Optional[float] = None) -> AgentToken:
    """Ask the agent on OIDC_SOCK for an access token of `account`."""
    path = socket_path(environ, account)
    data = exchange(path, request(account, audience, scope), timeout if timeout is not None else time_limit(environ))
    return parse_answer(data, account)


def token_window(token: AgentToken, now: float) -> Dict[str, float]:
    """When the token was issued and expires, on this machine's clock: the JWT's own `exp`
    (what the API server checks) when it has a sane one, else what the agent says. The agent's
    expires_at is not always this token's: for a request with an audience or scope, oidc-agent
    4.x answers the expiry of the account's default token (possibly 0)."""
    claims = _unverified_claims(token.value) or {}
    expires = clock.finite_number(claims.get("exp"))
    if expires is None or not now < expires <= now + clock.MAX_LIFETIME:
        expires = token.expires_at if now < token.expires_at <= now + clock.MAX_LIFETIME else now + UNKNOWN_LIFETIME
    issued = clock.finite_number(claims.get("iat"))
    if issued is None or not expires - clock.MAX_LIFETIME <= issued <= now:
        issued = now
    return {"issued_at": issued, "expires_at": expires}


def entry_from_agent(account: str, token: AgentToken, now: float) -> Dict[str, Any]:
    """A cache entry for a token from the agent. No refresh token, no client secret: the agent
    keeps those. Claims are read from the access token unverified, only to show who it is."""
    claims = _unverified_claims(token.value) or {}
    access: Dict[str, Any] = {"value": token.value, **token_window(token, now)}
    if isinstance(claims.get("iss"), str):
        access["issuer"] = claims["iss"]
    return {
        "version": 1,
        "plugin": "iam",
        "issuer": token.issuer,
        "oidc_agent": account,
        "claims": {k: claims[k] for k in KEPT_CLAIMS if k in claims},
        "tokens": {"access": access},
    }


def check_issuer(token: AgentToken, account: str, issuer: Optional[str]) -> None:
    """The account must still be at the issuer the context was made for (the API server trusts that one)."""
    if issuer and normalise_issuer(token.issuer) != normalise_issuer(issuer):
        raise UsageError(f"oidc-agent's account {account!r} is at {_brief(token.issuer, 200)}, not {issuer}",
                         f"run `kubectl iam login --oidc-agent {account}` again, or use another account")


def renew(values: Mapping[str, Any], runtime: Runtime) -> Dict[str, Any]:
    """get-token's renewal for an oidc-agent context: ask the agent again. Whatever goes wrong is
    "login required" (exit 5), in one line that names oidc-agent and what to run."""
    account = str(values.get("oidc_agent"))
    try:
        token = access_token(account, runtime.environ, values.get("audience"), values.get("scope"))
        check_issuer(token, account, values.get("issuer"))
    except LoginRequired:
        raise
    except CaasError as exc:
        raise LoginRequired(exc.message, exc.hint) from None
    return entry_from_agent(account, token, runtime.clock())
