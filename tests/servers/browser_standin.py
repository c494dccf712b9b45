"""A scripted stand-in for the person's browser in the device authorization grant.

It does over HTTP what a person does on the test OpenID provider's pages (oidc-provider's
device-flow pages and its devInteractions login/consent pages), keeping cookies like a browser:

    enter the user code -> confirm the device -> sign in (any login, any password) -> consent

and, to refuse, presses the provider's own abort control. What the device's poll then answers
depends on the provider's mode: ``access_denied`` in the generic one; in the IAM-like one (the
default) nothing changes, as at INDIGO IAM: the code stays pending until it expires, and may
even be entered again. Pages are read with the stdlib HTML parser; a page that matches none of
the expected steps raises :class:`BrowserStandinError` with what it saw.

The same pages serve both modes (the IAM-like provider's device page is <issuer>device).

For the authorization code grant (kubectl-iam's browser sign-in), ``approve_authorization`` and
``deny_authorization`` start at the authorization URL, go through the same sign-in and consent
pages (or press Cancel on one of them), and then, as a browser does, follow the provider's
redirect to the loopback address the client listens on: they return what that page answered.
``browser_command`` writes a tiny executable for the BROWSER variable that does one of them with
the URL it is given, so that a client's own way of opening a browser (Python's webbrowser) is
what starts it.

CLI (for the demo)::

    python -m tests.servers.browser_standin approve VERIFICATION_URI USER_CODE [--login alice] [--ca-cert FILE]
    python -m tests.servers.browser_standin deny VERIFICATION_URI USER_CODE [--at consent] [--ca-cert FILE]
    python -m tests.servers.browser_standin authorize AUTHORIZATION_URL [--login alice] [--ca-cert FILE]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

__all__ = [
    "BrowserStandinError",
    "LoopbackPage",
    "approve_authorization",
    "approve_device_code",
    "browser_command",
    "deny_authorization",
    "deny_device_code",
    "DENY_STAGES",
]

# Where a person can refuse: the "[ Abort ]" button on the device confirmation page, or the
# "[ Cancel ]" link on the sign-in page or on the consent page.
DENY_STAGES = ("confirm", "login", "consent")

_MAX_STEPS = 12
_TIMEOUT = 10.0


class BrowserStandinError(RuntimeError):
    """A page did not look like the next step a person would expect."""


@dataclass
class _Form:
    id: str | None
    action: str | None
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value) of named buttons

    def field_names(self) -> set[str]:
        return {name for name, _ in self.fields}

    def value(self, name: str) -> str | None:
        for key, val in self.fields:
            if key == name:
                return val
        return None


class _Page(HTMLParser):
    """Forms (with their hidden fields and named buttons), links, <title>, <h1> and red notes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self.title = ""
        self.h1 = ""
        self.notes: list[str] = []  # <p class="red"> texts, and <pre> texts (error details)
        self._form: _Form | None = None
        self._orphans: list[tuple[str, dict[str, str]]] = []  # controls with form="id" outside it
        self._text_target: str | None = None
        self._link_href: str | None = None
        self._link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = _Form(id=a.get("id"), action=a.get("action"), method=a.get("method", "get").lower())
            self.forms.append(self._form)
        elif tag in ("input", "button"):
            owner = a.get("form")
            if owner is not None and (self._form is None or self._form.id != owner):
                self._orphans.append((tag, a))
            elif self._form is not None:
                self._add_control(self._form, tag, a)
        elif tag == "a" and "href" in a:
            self._link_href, self._link_text = a["href"], []
        elif tag == "title":
            self._text_target = "title"
        elif tag == "h1":
            self._text_target = "h1"
        elif tag == "p" and "red" in a.get("class", "").split():
            self._text_target = "note"
            self.notes.append("")
        elif tag == "pre":
            self._text_target = "note"
            self.notes.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "a" and self._link_href is not None:
            self.links.append((self._link_href, " ".join("".join(self._link_text).split())))
            self._link_href = None
        elif tag in ("title", "h1", "p", "pre"):
            self._text_target = None

    def handle_data(self, data: str) -> None:
        if self._link_href is not None:
            self._link_text.append(data)
        if self._text_target == "title":
            self.title += data
        elif self._text_target == "h1":
            self.h1 += data
        elif self._text_target == "note":
            self.notes[-1] += data

    def close(self) -> None:
        super().close()
        for tag, a in self._orphans:
            for form in self.forms:
                if form.id == a.get("form"):
                    self._add_control(form, tag, a)
        self.title = " ".join(self.title.split())
        self.h1 = " ".join(self.h1.split())
        self.notes = [" ".join(n.split()) for n in self.notes if n.strip()]

    @staticmethod
    def _add_control(form: _Form, tag: str, a: dict[str, str]) -> None:
        name = a.get("name")
        if not name:
            return
        kind = a.get("type", "submit" if tag == "button" else "text").lower()
        if kind in ("submit", "button", "image"):
            form.buttons.append((name, a.get("value", "")))
        elif kind in ("checkbox", "radio"):
            if "checked" in a:
                form.fields.append((name, a.get("value", "on")))
        else:
            form.fields.append((name, a.get("value", "")))


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _describe(resp: requests.Response, page: _Page) -> str:
    forms = ", ".join(f"form(id={f.id!r}, fields={sorted(f.field_names())}, buttons={f.buttons})" for f in page.forms)
    return (
        f"{resp.request.method} {resp.url} -> HTTP {resp.status_code}; title={page.title!r}; "
        f"h1={page.h1!r}; notes={page.notes}; {forms or 'no forms'}"
    )


class _Browser:
    def __init__(self, ca_cert: str | bool | None, session: requests.Session | None) -> None:
        self.session = session or requests.Session()
        # Passed on each request: REQUESTS_CA_BUNDLE would override a Session-level verify.
        self.verify: str | bool = ca_cert if ca_cert is not None else True

    def get(self, url: str, follow: bool = True) -> tuple[requests.Response, _Page]:
        resp = self.session.get(url, verify=self.verify, timeout=_TIMEOUT, allow_redirects=follow)
        return resp, _parse(resp.text)

    def submit(
        self, resp: requests.Response, form: _Form, extra: dict[str, str] | None = None, follow: bool = True
    ) -> tuple[requests.Response, _Page]:
        data = list(form.fields)
        if extra:
            data = [(k, v) for k, v in data if k not in extra] + list(extra.items())
        url = urljoin(resp.url, form.action or resp.url)
        if form.method == "post":
            nxt = self.session.post(url, data=data, verify=self.verify, timeout=_TIMEOUT, allow_redirects=follow)
        else:
            nxt = self.session.get(url, params=data, verify=self.verify, timeout=_TIMEOUT, allow_redirects=follow)
        return nxt, _parse(nxt.text)


def _find_form(page: _Page, *, form_id: str | None = None, prompt: str | None = None) -> _Form | None:
    for form in page.forms:
        if form_id is not None and form.id == form_id:
            return form
        if prompt is not None and form.value("prompt") == prompt:
            return form
    return None


def _run(
    verification_uri: str,
    user_code: str,
    *,
    login: str,
    password: str,
    ca_cert: str | bool | None,
    deny_at: str | None,
    session: requests.Session | None,
) -> str:
    """Walk the pages; return "approved" or "denied"."""
    if deny_at is not None and deny_at not in DENY_STAGES:
        raise ValueError(f"deny stage must be one of {DENY_STAGES}, got {deny_at!r}")
    browser = _Browser(ca_cert, session)
    resp, page = browser.get(verification_uri)
    seen: list[str] = []
    for _ in range(_MAX_STEPS):
        where = _describe(resp, page)
        if deny_at is None and page.title == "Sign-in Success":
            return "approved"
        if resp.status_code >= 400 or page.h1.lower().startswith("oops"):
            raise BrowserStandinError(f"the provider showed an error page: {where}")

        # 1. The code entry page (or, for verification_uri_complete, the self-submitting form
        #    that already carries the code).
        form = _find_form(page, form_id="op.deviceInputForm")
        if form is None:
            form = next(
                (
                    f
                    for f in page.forms
                    if {"xsrf", "user_code"} <= f.field_names() and "confirm" not in f.field_names()
                ),
                None,
            )
        if form is not None:
            if "code-entry" in seen:
                # Shown again after we entered a code: the provider rejected it.
                raise BrowserStandinError(f"the user code was not accepted: {where}")
            seen.append("code-entry")
            resp, page = browser.submit(resp, form, {"user_code": user_code})
            continue

        # 2. "Confirm Device": Continue (confirm=yes) or the Abort button (abort=yes).
        form = _find_form(page, form_id="op.deviceConfirmForm")
        if form is not None:
            seen.append("confirm")
            if deny_at == "confirm":
                if ("abort", "yes") not in form.buttons:
                    raise BrowserStandinError(f"no abort button on the confirm page: {where}")
                resp, page = browser.submit(resp, form, {"abort": "yes"})
                return _expect_denied(resp, page)
            resp, page = browser.submit(resp, form)
            continue

        # 3. devInteractions sign-in page, 4. its consent page.
        for prompt in ("login", "consent"):
            form = _find_form(page, prompt=prompt)
            if form is not None:
                break
        if form is not None:
            seen.append(prompt)
            if deny_at == prompt:
                cancel = next((href for href, text in page.links if "Cancel" in text), None)
                if cancel is None:
                    raise BrowserStandinError(f"no Cancel link on the {prompt} page: {where}")
                resp, page = browser.get(urljoin(resp.url, cancel))
                return _expect_denied(resp, page)
            extra = {"login": login, "password": password} if prompt == "login" else None
            resp, page = browser.submit(resp, form, extra)
            continue

        if deny_at is not None and page.title == "Sign-in Success":
            raise BrowserStandinError(
                f"wanted to refuse at the {deny_at} page but the flow finished without it (pages seen: {seen})"
            )
        raise BrowserStandinError(f"unexpected page after {seen}: {where}")
    raise BrowserStandinError(f"gave up after {_MAX_STEPS} pages (pages seen: {seen})")


def _expect_denied(resp: requests.Response, page: _Page) -> str:
    # After an abort the provider shows its code entry page with "The Sign-in request was
    # interrupted" (or an error page that names access_denied).
    text = " ".join([page.title, page.h1, *page.notes]).lower()
    if "interrupted" in text or "access_denied" in text or "aborted" in text:
        return "denied"
    raise BrowserStandinError(f"the abort did not show a refusal page: {_describe(resp, page)}")


def approve_device_code(
    verification_uri: str,
    user_code: str,
    login: str = "alice",
    ca_cert: str | bool | None = None,
    *,
    password: str = "any-password",
    session: requests.Session | None = None,
) -> None:
    """Approve a device authorization as ``login``, as a person would in a browser.

    ``verification_uri`` may also be ``verification_uri_complete``. ``ca_cert`` is the CA bundle
    for the provider's TLS certificate (path), or a bool for requests' ``verify``. Pass the same
    ``session`` to reuse the provider's sign-in cookie (the provider then skips the login page).
    """
    _run(verification_uri, user_code, login=login, password=password, ca_cert=ca_cert, deny_at=None, session=session)


def deny_device_code(
    verification_uri: str,
    user_code: str,
    login: str = "alice",
    ca_cert: str | bool | None = None,
    *,
    at: str = "confirm",
    password: str = "any-password",
    session: requests.Session | None = None,
) -> None:
    """Refuse a device authorization. The device's next poll answers ``access_denied`` (generic
    provider) or, as at IAM, still ``authorization_pending`` (IAM-like provider, the default).

    ``at`` chooses where the person refuses: ``"confirm"`` (Abort on the device confirmation
    page), ``"login"`` (Cancel on the sign-in page) or ``"consent"`` (Cancel on the consent page).
    """
    _run(verification_uri, user_code, login=login, password=password, ca_cert=ca_cert, deny_at=at, session=session)


# -- the authorization code grant (a client's loopback redirect) --------------------------------

# Where a person can refuse an authorization request: "[ Cancel ]" on the sign-in or consent page.
AUTHORIZATION_DENY_STAGES = ("login", "consent")


@dataclass
class LoopbackPage:
    """What the browser was shown at the end: the client's loopback redirect and its answer."""

    url: str  # the redirect the browser followed (code and state, or error, in its query)
    status: int
    title: str
    text: str  # the page's visible text, whitespace collapsed
    steps: list[str] = field(default_factory=list)  # the provider's pages the person acted on, in order

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))


class _TextOnly(HTMLParser):
    """The text a page shows (its <body>'s)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("title", "script", "style"):
            self._hidden += 1
        elif tag in ("p", "h1", "h2", "div", "br", "li"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("title", "script", "style"):
            self._hidden = max(0, self._hidden - 1)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    try:
        return parts.scheme == "http" and ipaddress.ip_address((parts.hostname or "").strip("[]")).is_loopback
    except ValueError:
        return parts.scheme == "http" and parts.hostname == "localhost"


def _deliver(browser: _Browser, url: str, replace: dict[str, str] | None, steps: list[str]) -> LoopbackPage:
    """GET the loopback redirect, as a browser does after the provider's last redirect."""
    if replace:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.update(replace)
        url = urlunsplit(parts._replace(query=urlencode(query)))
    resp = browser.session.get(url, timeout=_TIMEOUT, allow_redirects=False)
    page = _parse(resp.text)
    text = _TextOnly()
    text.feed(resp.text)
    text.close()
    return LoopbackPage(url, resp.status_code, page.title, " ".join("".join(text.parts).split()), steps + ["loopback"])


def _authorize(
    url: str,
    *,
    login: str,
    password: str,
    ca_cert: str | bool | None,
    deny_at: str | None,
    session: requests.Session | None,
    replace: dict[str, str] | None,
) -> LoopbackPage:
    if deny_at is not None and deny_at not in AUTHORIZATION_DENY_STAGES:
        raise ValueError(f"deny stage must be one of {AUTHORIZATION_DENY_STAGES}, got {deny_at!r}")
    browser = _Browser(ca_cert, session)
    resp, page = browser.get(url, follow=False)
    seen: list[str] = []
    for _ in range(_MAX_STEPS * 2):
        if resp.is_redirect:
            target = urljoin(resp.url, resp.headers["Location"])
            if _is_loopback_http(target):
                return _deliver(browser, target, replace, seen)
            resp, page = browser.get(target, follow=False)
            continue
        where = _describe(resp, page)
        if resp.status_code >= 400 or page.h1.lower().startswith("oops"):
            raise BrowserStandinError(f"the provider showed an error page: {where}")
        form, prompt = None, None
        for prompt in ("login", "consent"):
            form = _find_form(page, prompt=prompt)
            if form is not None:
                break
        if form is None:
            raise BrowserStandinError(f"unexpected page after {seen}: {where}")
        seen.append(prompt)
        if deny_at == prompt:
            cancel = next((href for href, text in page.links if "Cancel" in text), None)
            if cancel is None:
                raise BrowserStandinError(f"no Cancel link on the {prompt} page: {where}")
            resp, page = browser.get(urljoin(resp.url, cancel), follow=False)
            continue
        extra = {"login": login, "password": password} if prompt == "login" else None
        resp, page = browser.submit(resp, form, extra, follow=False)
    raise BrowserStandinError(f"gave up after {_MAX_STEPS * 2} pages (pages seen: {seen})")


def approve_authorization(
    url: str,
    login: str = "alice",
    ca_cert: str | bool | None = None,
    *,
    password: str = "any-password",
    session: requests.Session | None = None,
    replace: dict[str, str] | None = None,
) -> LoopbackPage:
    """Sign in as ``login`` and consent at the authorization URL, then follow the provider's
    redirect to the client's loopback address; returns what that page answered.

    ``replace`` changes parameters of the redirect before it is followed (say, a forged
    ``state``), as a tampered or stale tab would deliver it.
    """
    return _authorize(url, login=login, password=password, ca_cert=ca_cert, deny_at=None, session=session,
                      replace=replace)


def deny_authorization(
    url: str,
    login: str = "alice",
    ca_cert: str | bool | None = None,
    *,
    at: str = "login",
    password: str = "any-password",
    session: requests.Session | None = None,
) -> LoopbackPage:
    """Press Cancel on the sign-in page (``at="login"``) or the consent page (``"consent"``); the
    provider then redirects with error=access_denied, which is followed to the loopback address."""
    return _authorize(url, login=login, password=password, ca_cert=ca_cert, deny_at=at, session=session,
                      replace=None)


# -- an executable for BROWSER ------------------------------------------------------------------

_REPO = Path(__file__).resolve().parents[2]


def browser_command(directory: str | os.PathLike[str], **settings: Any) -> Path:
    """Write `directory`/browser, an executable to put in BROWSER: run with one URL (as Python's
    webbrowser runs a BROWSER command), it acts as a person would and appends what happened, as
    one JSON line, to ``settings["log"]`` when given.

    Settings: ``action`` ("approve", "deny", "ignore": open nothing and answer nothing), ``login``,
    ``ca_cert``, ``at`` (where "deny" refuses), ``replace`` (for "approve": redirect parameters to
    change), ``linger`` (seconds: leave a child process behind holding the stdout it was given, as
    a browser that keeps running does), ``driver`` ("requests", the default, or "chromium":
    tests/servers/chromium.py, which takes ``server_cert`` too).
    """
    path = Path(directory) / "browser"
    path.write_text(
        f"#!{sys.executable}\n"
        "# A stand-in for the person's browser (tests/servers/browser_standin.py browser_command).\n"
        "import sys\n"
        f"sys.path.insert(0, {str(_REPO)!r})\n"
        "from tests.servers.browser_standin import run_as_browser\n"
        f"sys.exit(run_as_browser(sys.argv[1:], {json.dumps(settings)!r}))\n"
    )
    path.chmod(0o755)
    return path


def run_as_browser(argv: list[str], settings_json: str) -> int:
    """What the executable from browser_command does with its arguments."""
    settings = json.loads(settings_json)
    record: dict[str, Any] = {"argv": argv, "action": settings.get("action", "approve")}
    code = 0
    try:
        if len(argv) != 1:
            raise BrowserStandinError(f"expected one URL, got {argv!r}")
        if settings.get("linger"):
            child = subprocess.Popen(["sleep", str(settings["linger"])], stdin=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
            record["lingering_pid"] = child.pid
        page = _act(argv[0], settings, record["action"])
        if page is not None:
            record.update(url=page.url, status=page.status, title=page.title, text=page.text, steps=page.steps)
    except Exception as exc:  # noqa: BLE001 - reported to the test through the log
        record["error"] = f"{type(exc).__name__}: {exc}"
        print(f"browser stand-in: {record['error']}", file=sys.stderr)
        code = 1
    if settings.get("log"):
        with open(settings["log"], "a") as log:
            log.write(json.dumps(record) + "\n")
    return code


def _act(url: str, settings: dict[str, Any], action: str) -> LoopbackPage | None:
    login, ca_cert = settings.get("login", "alice"), settings.get("ca_cert")
    if action == "ignore":
        return None
    if settings.get("driver", "requests") == "chromium":
        from tests.servers.chromium import sign_in

        if action != "approve":
            raise BrowserStandinError("the Chromium driver only approves")
        return sign_in(url, login=login, server_cert=settings["server_cert"])
    if action == "approve":
        return approve_authorization(url, login, ca_cert, replace=settings.get("replace"))
    if action == "deny":
        return deny_authorization(url, login, ca_cert, at=settings.get("at", "login"))
    raise BrowserStandinError(f"unknown action {action!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.browser_standin",
        description="Approve or refuse a device code on the test OpenID provider, like a person.",
    )
    parser.add_argument("action", choices=("approve", "deny", "authorize"))
    parser.add_argument("verification_uri", help="the verification URI, or for authorize the authorization URL")
    parser.add_argument("user_code", nargs="?", help="the user code (approve and deny)")
    parser.add_argument("--login", default="alice")
    parser.add_argument("--password", default="any-password")
    parser.add_argument("--ca-cert", help="CA bundle for the provider's certificate")
    parser.add_argument("--at", choices=DENY_STAGES, default="confirm", help="where to refuse (deny only)")
    args = parser.parse_args(argv)
    if args.action != "authorize" and not args.user_code:
        parser.error(f"{args.action} needs USER_CODE")
    try:
        if args.action == "authorize":
            page = approve_authorization(args.verification_uri, args.login, args.ca_cert, password=args.password)
            print(f"signed in as {args.login}; {page.url.split('?')[0]} answered HTTP {page.status}: {page.text}")
        elif args.action == "approve":
            approve_device_code(args.verification_uri, args.user_code, args.login, args.ca_cert, password=args.password)
            print(f"approved {args.user_code} as {args.login}")
        else:
            deny_device_code(
                args.verification_uri, args.user_code, args.login, args.ca_cert, at=args.at, password=args.password
            )
            print(f"denied {args.user_code} at the {args.at} page")
    except (BrowserStandinError, requests.RequestException) as exc:
        print(f"browser stand-in: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
