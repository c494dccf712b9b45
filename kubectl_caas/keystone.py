"""Keystone backend (keystoneauth1): password and application-credential logins, remembered
application credentials, project listing, token revocation.

It answers the core's one question — "a token for this identity, its expiry, and what is needed to
renew it" — as a cache entry (see `entry_from_access`).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
from typing import Any, Dict, List, Mapping, Optional

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from kubectl_caas import http
from kubectl_caas.errors import EXIT_AUTH, AuthError, CaasError, LoginRequired, UsageError
from kubectl_caas.identity import identity_type, to_args
from kubectl_caas.plugins import OPENSTACK_OPTIONS
from kubectl_caas.runtime import Runtime

# keystoneauth1 logs its retries as warnings; with no handler Python would print them to stderr.
# Our own --debug output and error lines say what happened.
logging.getLogger("keystoneauth").addHandler(logging.NullHandler())

SERVICE = "Keystone"
DEFAULT_DOMAIN = "default"
DEFAULT_REMEMBER_SECONDS = 7 * 24 * 3600
CACERT_HINT = ("pass the CA bundle with --cacert or OS_CACERT (CloudVeneto users: CloudVenetoCAs.pem)")


def normalise_auth_url(url: str) -> str:
    """Keystone's v3 root. OS_AUTH_URL is often given without /v3, or with the retired /v2.0."""
    url = url.strip().rstrip("/")
    if url.endswith("/v2.0"):
        url = url[: -len("/v2.0")]
    if not url.endswith("/v3"):
        url += "/v3"
    return url


class _IdentityMeaning:
    """What the Keystone identity's fields mean (the fields themselves come from the plugin's
    option table: see identity.identity_type and plugins.OPENSTACK_OPTIONS)."""

    def __post_init__(self) -> None:
        # Frozen: the normalised values are set once, here.
        put = object.__setattr__
        if not self.auth_url:
            raise UsageError("no Keystone URL", "pass --auth-url or set OS_AUTH_URL")
        put(self, "auth_url", normalise_auth_url(self.auth_url))
        if not (self.user_domain or self.user_domain_id):
            put(self, "user_domain_id", DEFAULT_DOMAIN)
        if not (self.project_domain or self.project_domain_id):
            put(self, "project_domain_id", DEFAULT_DOMAIN)
        if self.cacert:
            put(self, "cacert", os.path.abspath(os.path.expanduser(self.cacert)))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Identity":
        """From get-token's values (the exec args login wrote), or any mapping of field names."""
        if not values.get("auth_url"):
            raise UsageError("get-token needs --auth-url", "run `kubectl openstack login` again")
        return cls(**{f: values.get(f) for f in cls.__dataclass_fields__})

    def values(self) -> Dict[str, Any]:
        """The fields as get-token's values, only what says something: the user's domain name, when
        given, makes its id redundant (and the same for the project)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if self.user_domain:
            values["user_domain_id"] = None
        if self.project_domain:
            values["project_domain_id"] = None
        return values

    def exec_args(self) -> List[str]:
        """get-token's arguments: enough to find the cache entry and log in again, no secret."""
        return to_args(OPENSTACK_OPTIONS, self.values())

    @property
    def who(self) -> str:
        domain = self.user_domain or self.user_domain_id
        return f"user {self.user or self.user_id} in domain {domain}"

    @property
    def project_label(self) -> str:
        return self.project or self.project_id or "?"

    def scope(self) -> Dict[str, Optional[str]]:
        # By id whenever there is one, as keystoneauth1 (and so every OpenStack tool) does: a
        # dashboard's clouds.yaml names both, and the name alone may be ambiguous across domains.
        if self.project_id:
            return {"project_id": self.project_id}
        return {"project_name": self.project, "project_domain_name": self.project_domain,
                "project_domain_id": None if self.project_domain else self.project_domain_id}

    def user_fields(self) -> Dict[str, Optional[str]]:
        # By id when there is one, as keystoneauth1 does; a name needs its domain.
        if self.user_id:
            return {"user_id": self.user_id}
        return {"username": self.user, "user_domain_name": self.user_domain,
                "user_domain_id": None if self.user_domain else self.user_domain_id}


# Who logs in, where: every non-secret setting needed to authenticate again (frozen).
Identity = identity_type("Identity", OPENSTACK_OPTIONS, _IdentityMeaning)


class Keystone:
    """A connection to one Keystone, with our timeouts, CA and --debug logging.

    When Keystone's multi-factor rules want a TOTP passcode after the password, it comes from
    OS_PASSCODE, else (`interactive`) from the person at the terminal.
    """

    def __init__(self, identity: Identity, runtime: Runtime, interactive: bool = True):
        self.identity = identity
        self.runtime = runtime
        self.interactive = interactive
        self._passcode: Optional[str] = None
        self.used_passcode = False  # a login of this session needed the TOTP second factor
        self.verify = http.verify_for(identity.cacert)
        self.session = ks_session.Session(
            session=http.new_session(SERVICE, identity.auth_url, "--auth-url", debug=runtime.debug),
            verify=self.verify, timeout=http.total_timeout(), user_agent="kubectl-caas")

    def _get_access(self, auth, action: str, project_id: Optional[str] = None, expect_identity: bool = True,
                    scoped: bool = True):
        """auth.get_access within our time budget, retried when Keystone answers a transient 5xx; the
        answer checked before anything trusts it (see `_checked`)."""
        deadline = http.Deadline(SERVICE, self.identity.auth_url)

        def attempt():
            self.session.timeout = deadline.timeout()
            return auth.get_access(self.session)

        sent = self.runtime.clock()
        try:
            access = http.with_retries(attempt, _transient, deadline, debug=self.runtime.debug)
        except (KeyError, TypeError, AttributeError, RecursionError) as exc:
            # keystoneauth1 reads X-Subject-Token and the body's `token` without checking them
            raise CaasError(f"{SERVICE} answered {action} with something that is not a token "
                            f"({type(exc).__name__}: {exc})", "check --auth-url; rerun with --debug to see "
                            "the answer") from None
        return self._checked(access, action, sent, project_id if project_id else None, expect_identity, scoped)

    def _checked(self, access, action: str, sent: float, project_id: Optional[str], expect_identity: bool,
                 scoped: bool = True):
        """The answer must be a token for the user and project we asked for (scoped to a project when
        we asked for that: k8s-keystone-auth refuses any other), with a sane lifetime.

        Sets `local_issued`, `local_expires` (this machine's clock) and `clock_offset` on it.
        """
        from kubectl_caas import clock

        bad = f"{SERVICE}'s answer to {action}"
        try:
            token, user_id, expires = access.auth_token, access.user_id, access.expires.timestamp()
            issued = access.issued.timestamp() if access.issued else sent
            names = (access.username, access.project_id, access.project_name)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise CaasError(f"{bad} is malformed ({type(exc).__name__})", "check --auth-url") from None
        if not isinstance(token, str) or not token or not token.isprintable() or not isinstance(user_id, str):
            raise CaasError(f"{bad} carries no usable token", "check --auth-url")
        try:
            access.local_issued, access.local_expires = clock.local_window(sent, issued, expires)
        except ValueError as exc:
            raise CaasError(f"{bad} gives the token an absurd lifetime ({exc})", "check --auth-url") from None
        access.clock_offset = issued - sent
        ident = self.identity
        wanted_user = ident.user_id or ident.user
        got_user = user_id if ident.user_id else names[0]
        if expect_identity and wanted_user and str(got_user or "").casefold() != wanted_user.casefold():
            raise CaasError(f"{bad} is a token for user {got_user}, not {wanted_user}",
                            "check --auth-url: a Keystone must not answer for another user", EXIT_AUTH)
        if scoped and not access.project_scoped:
            raise CaasError(f"{bad} is a token scoped to no project, not to {project_id or ident.project_label}",
                            "check --auth-url: a Keystone must answer a project-scoped login with a project-scoped "
                            "token", EXIT_AUTH)
        if expect_identity and scoped:
            wanted_id = project_id or ident.project_id
            if wanted_id and names[1] != wanted_id or \
                    not wanted_id and ident.project and str(names[2] or "").casefold() != ident.project.casefold():
                raise CaasError(f"{bad} is a token for project {names[2]} ({names[1]}), not "
                                f"{wanted_id or ident.project}", "check --auth-url: a Keystone must not answer "
                                "for another project", EXIT_AUTH)
        return access

    # -- errors ---------------------------------------------------------------------------------

    def _translate(self, exc: Exception, action: str) -> CaasError:
        url = self.identity.auth_url
        if isinstance(exc, (ks_exc.ConnectionError, ks_exc.DiscoveryFailure)):
            return http.network_error(exc, url, SERVICE, CACERT_HINT)
        if isinstance(exc, ks_exc.HttpError):
            response = getattr(exc, "response", None)
            body = response.content if response is not None else b""
            message = http.describe_http_error(exc.http_status or 0, body, SERVICE, action)
            request_id = getattr(exc, "request_id", None)
            return CaasError(message + (f" (Request-ID: {request_id})" if request_id else ""))
        if isinstance(exc, ks_exc.InvalidResponse):
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", "?")
            body = getattr(response, "content", b"") or b""
            try:
                http.parse_json(body)
                what = "an answer that is not a Keystone token"
            except ValueError:
                what = "a body that is not valid JSON"
            return CaasError(f"{SERVICE} answered HTTP {status} to {action} with {what}",
                             "check the auth URL; rerun with --debug to see the answer")
        return CaasError(f"{SERVICE}: {action} failed: {exc}")

    # -- logins ---------------------------------------------------------------------------------

    def password_login(self, password: str, scoped: bool = True):
        if not password:
            raise UsageError("the password is empty", "type it at the prompt, or pass it with --password-stdin")
        ident = self.identity
        if not (ident.user or ident.user_id):
            raise UsageError("no user name", "pass --user or set OS_USERNAME")
        if scoped and not (ident.project or ident.project_id):
            raise UsageError("no project", "pass --project or set OS_PROJECT_NAME "
                             "(`kubectl openstack projects` lists yours)")
        fields: Dict[str, Any] = dict(ident.user_fields())
        if scoped:
            fields.update(ident.scope())
        auth = v3.Password(ident.auth_url, password=password, unscoped=not scoped, include_catalog=False,
                           **{k: v for k, v in fields.items() if v})
        try:
            return self._get_access(auth, "the password login", scoped=scoped)
        except ks_exc.MissingAuthMethods as exc:
            return self._login_with_passcode(exc, password, scoped)
        except ks_exc.Unauthorized:
            if scoped:
                self._explain_scoped_401(password)
            raise AuthError(f"Keystone rejected the password for {ident.who} at {ident.auth_url} (HTTP 401)",
                            "check the user name, the domain and the password set in the dashboard") from None
        except ks_exc.ClientException as exc:
            raise self._translate(exc, "the password login") from None

    def _login_with_passcode(self, missing, password: str, scoped: bool):
        """The password was right but Keystone's multi-factor rules want a TOTP passcode as well."""
        ident = self.identity
        rules = [set(rule) for rule in (missing.required_auth_methods or [])]
        if not any(rule <= {"password", "totp"} for rule in rules):
            methods = ", ".join(sorted({m for rule in rules for m in rule}))
            raise AuthError(f"Keystone requires more authentication methods for {ident.who}: {methods}",
                            "only password plus TOTP is supported by kubectl-openstack") from None
        if self._passcode is None:
            self._passcode = self.runtime.getenv("OS_PASSCODE") or (
                self.runtime.ask_secret("One-time passcode (TOTP): ") if self.interactive else None)
        if not self._passcode:
            raise AuthError(f"Keystone requires a one-time passcode (TOTP) for {ident.who}",
                            "set OS_PASSCODE, or run the command at a terminal to be asked for it") from None
        user = {k: v for k, v in ident.user_fields().items() if v}
        scope = {k: v for k, v in ident.scope().items() if v} if scoped else {}
        auth = v3.Auth(ident.auth_url, [v3.PasswordMethod(password=password, **user),
                                        v3.TOTPMethod(passcode=self._passcode, **user)],
                       unscoped=not scoped, include_catalog=False, **scope)
        try:
            access = self._get_access(auth, "the password and passcode login", scoped=scoped)
            self.used_passcode = True
            return access
        except ks_exc.Unauthorized:
            if scoped:
                self._explain_scoped_401(password)  # reuses this passcode: nobody is asked twice
            self._passcode = None
            raise AuthError(f"Keystone rejected the passcode for {ident.who} (HTTP 401)",
                            "use the current code from your authenticator app") from None
        except ks_exc.ClientException as exc:
            raise self._translate(exc, "the password and passcode login") from None

    def _explain_scoped_401(self, password: str) -> None:
        """A project-scoped login failed: was it the password, or the project?"""
        try:
            unscoped = self.password_login(password, scoped=False)
        except AuthError:
            return  # the password itself is wrong: the caller says so
        projects = self.projects(unscoped.auth_token)
        names = ", ".join(sorted(p["name"] for p in projects)) or "none"
        raise AuthError(f"{self.identity.who} cannot use project {self.identity.project_label} "
                        f"(unknown, or you are not a member; HTTP 401)", f"your projects: {names}")

    def token_login(self, token: str, project_id: str):
        auth = v3.Token(self.identity.auth_url, token=token, project_id=project_id, include_catalog=False)
        try:
            return self._get_access(auth, f"the login to project {project_id}", project_id=project_id)
        except ks_exc.ClientException as exc:
            raise self._translate(exc, f"the login to project {project_id}") from None

    def application_credential_login(self, credential_id: Optional[str], secret: str, expect_identity: bool = True,
                                     name: Optional[str] = None):
        """By id, or by `name` with the identity's user (name or id, and domain). `expect_identity`:
        the answer must be for the identity's user and project (renewal); at login the credential
        itself says who and where."""
        # Never send a scope with an application credential: Keystone answers 401 (its project is implicit).
        by_name = {} if credential_id else {"application_credential_name": name, **{
            k: v for k, v in self.identity.user_fields().items() if v}}
        if not credential_id and not (name and (self.identity.user or self.identity.user_id)):
            raise UsageError(f"application credential {name!r} is named without its user",
                             "an application credential given by name needs the user's name or id as well")
        auth = v3.ApplicationCredential(self.identity.auth_url, application_credential_secret=secret,
                                        application_credential_id=credential_id, include_catalog=False, **by_name)
        credential_id = credential_id or name
        try:
            return self._get_access(auth, "the application credential login", expect_identity=expect_identity)
        except (ks_exc.Unauthorized, ks_exc.NotFound) as exc:
            # A deleted credential answers 404 ("Could not find Application Credential"), not 401.
            raise AuthError(f"Keystone rejected application credential {credential_id} (HTTP {exc.http_status})",
                            "it may have expired or been deleted; run `kubectl openstack login`") from None
        except ks_exc.MissingAuthMethods:
            # Measured with Keystone 30: a user's multi-factor rules apply to their credentials too.
            raise AuthError(f"Keystone's multi-factor rules refuse application credential {credential_id}",
                            "log in with your password and passcode: `kubectl openstack login`") from None
        except ks_exc.ClientException as exc:
            raise self._translate(exc, "the application credential login") from None

    # -- plain REST calls on the identity endpoint -----------------------------------------------

    def _call(self, method: str, path: str, token: str, action: str, ok=(200,), **kwargs: Any):
        """One REST call on the identity endpoint; GET and DELETE are retried on a transient 5xx."""
        url = self.identity.auth_url + path
        headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
        deadline = http.Deadline(SERVICE, self.identity.auth_url)

        def attempt():
            try:
                response = self.session.request(url, method, headers=headers, authenticated=False,
                                                raise_exc=False, timeout=deadline.timeout(), **kwargs)
            except ks_exc.ClientException as exc:
                raise self._translate(exc, action) from None
            if response.status_code not in ok:
                raise ApiError(response.status_code,
                               http.describe_http_error(response.status_code, response.content, SERVICE, action))
            return response

        idempotent = method in ("GET", "HEAD", "DELETE")
        return http.with_retries(attempt, _transient if idempotent else (lambda exc: False), deadline,
                                 debug=self.runtime.debug)

    def projects(self, token: str) -> List[Dict[str, Any]]:
        response = self._call("GET", "/auth/projects", token, "the project list")
        projects = _json(response).get("projects")
        if not isinstance(projects, list):
            raise CaasError("Keystone's project list is malformed")
        return [p for p in projects if isinstance(p, dict) and p.get("name") and p.get("id")]

    def create_application_credential(self, access, lifetime: float) -> Optional[Dict[str, Any]]:
        """A restricted credential for the token's project, or None when Keystone forbids it (403)."""
        # Keystone judges expires_at by its own clock: count the lifetime from its issued_at.
        expires = dt.datetime.fromtimestamp(access.local_issued + access.clock_offset, dt.timezone.utc) + \
            dt.timedelta(seconds=lifetime)
        # Unique per login; the host name tells a person in the dashboard where it is used.
        name = f"kubectl-caas-{access.project_name}-{socket.gethostname()}-{secrets.token_hex(4)}"
        body = {"application_credential": {
            "name": name[:255],
            "description": "Created by kubectl-caas login so kubectl can renew its Keystone tokens. "
                           "Deleted by `kubectl openstack logout`.",
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S"),
            "unrestricted": False,
        }}
        try:
            response = self._call("POST", f"/users/{access.user_id}/application_credentials",
                                  access.auth_token, "creating an application credential", ok=(201,), json=body)
        except ApiError as exc:
            if exc.status == 403:
                return None
            raise
        created = _json(response).get("application_credential") or {}
        if not created.get("id") or not created.get("secret"):
            raise CaasError("Keystone created an application credential but returned no id or secret")
        return {"id": created["id"], "secret": created["secret"], "name": created.get("name", name),
                "expires_at": access.local_issued + lifetime, "user_id": access.user_id}

    def delete_application_credential(self, token: str, user_id: str, credential_id: str) -> bool:
        try:
            self._call("DELETE", f"/users/{user_id}/application_credentials/{credential_id}", token,
                       "deleting the application credential", ok=(204,))
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def revoke_quietly(self, token: str) -> None:
        """Revoke a token we made only for a moment (an unscoped one): a failure changes nothing for
        the user, and must not hide the outcome of what the token was made for."""
        try:
            self.revoke(token)
        except CaasError:
            pass

    def revoke(self, token: str) -> bool:
        """Revoke a token with itself (Keystone lets a token's owner revoke it); False if already gone."""
        try:
            self._call("DELETE", "/auth/tokens", token, "revoking the token", ok=(204,),
                       headers={"X-Subject-Token": token})
            return True
        except ApiError as exc:
            if exc.status in (401, 404):
                return False
            raise


MFA_NOTICE = ("Keystone's multi-factor rules for your account also apply to application credentials, so kubectl "
              "cannot renew silently: it will ask for your password and passcode when the token expires "
              "(OS_PASSWORD and OS_PASSCODE serve automation)")
FORBIDDEN_NOTICE = ("Keystone does not allow you to create application credentials (HTTP 403); kubectl will ask "
                    "for your password again when the token expires")


def remember_login(keystone: Keystone, access, lifetime: float):
    """(credential or None, notice or None): an application credential that keeps this login alive.

    None with a notice when Keystone forbids creating one (403), or when multi-factor rules would
    refuse it anyway (it is then deleted at once rather than left unusable on the server).
    """
    if not lifetime:
        return None, None
    credential = keystone.create_application_credential(access, lifetime)
    if credential is None:
        return None, FORBIDDEN_NOTICE
    credential["created_by_login"] = True  # ours: logout and the next login delete it
    if keystone.used_passcode:
        try:
            keystone.application_credential_login(credential["id"], credential["secret"])
        except AuthError:
            keystone.delete_application_credential(access.auth_token, access.user_id, credential["id"])
            return None, MFA_NOTICE
    return credential, None


class ApiError(CaasError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status in http.TRANSIENT_STATUS
    return isinstance(exc, ks_exc.HttpError) and exc.http_status in http.TRANSIENT_STATUS


def _json(response) -> Dict[str, Any]:
    try:
        data = http.parse_json(response.content)
    except ValueError:
        raise CaasError(f"Keystone answered HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise CaasError(f"Keystone answered HTTP {response.status_code} with unexpected JSON")
    return data


# ---------------------------------------------------------------------------------------------
# Cache entries


def entry_from_access(identity: Identity, access, method: str,
                      application_credential: Optional[Dict[str, Any]] = None,
                      remember_seconds: Optional[float] = None) -> Dict[str, Any]:
    """The cache entry for a checked login answer (see Keystone._checked); times in local time."""
    entry: Dict[str, Any] = {
        "version": 1,
        "plugin": "openstack",
        "auth_url": identity.auth_url,
        "user": {"id": access.user_id, "name": access.username, "domain_id": access.user_domain_id,
                 "domain_name": access.user_domain_name},
        "project": {"id": access.project_id, "name": access.project_name,
                    "domain_id": access.project_domain_id},
        "method": method,
        "tokens": {"keystone": {"value": access.auth_token, "expires_at": access.local_expires,
                                "issued_at": access.local_issued}},
        "clock_offset": access.clock_offset,
    }
    if application_credential:
        entry["application_credential"] = application_credential
    if remember_seconds is not None:
        entry["remember_seconds"] = remember_seconds
    return entry


def _check_project(identity: Identity, access) -> None:
    """A credential from the environment must be for the project this context is about."""
    if identity.project_id and access.project_id != identity.project_id or \
            identity.project and access.project_name != identity.project and not identity.project_id:
        raise AuthError(f"the application credential is for project {access.project_name}, "
                        f"not {identity.project_label}",
                        "unset OS_APPLICATION_CREDENTIAL_ID/_SECRET or use a credential for this project")


def renew(values: Mapping[str, str], entry: Optional[Dict[str, Any]], runtime: Runtime,
          interactive: bool) -> Dict[str, Any]:
    """A fresh token for get-token, from the first source that works: the remembered application
    credential; OS_APPLICATION_CREDENTIAL_ID/_SECRET; the clouds.yaml entry login used; OS_PASSWORD
    or that entry's password; a prompt when a person is at the terminal (which also remembers the
    login again). Otherwise LoginRequired."""
    identity = Identity.from_values(values)
    keystone = Keystone(identity, runtime, interactive=interactive)
    entry = dict(entry or {})
    remembered = entry.get("application_credential")
    if isinstance(remembered, dict) and remembered.get("id") and remembered.get("secret"):
        expired = float(remembered.get("expires_at") or 0) and float(remembered["expires_at"]) <= runtime.clock()
        if not expired:
            try:
                access = keystone.application_credential_login(remembered["id"], remembered["secret"])
                return entry_from_access(identity, access, entry.get("method") or "application_credential",
                                         remembered, entry.get("remember_seconds"))
            except AuthError:
                pass  # expired or deleted on the server: fall through to the next source
        runtime.notice("kubectl-openstack: the remembered application credential no longer works")
        entry.pop("application_credential", None)

    cloud = _cloud_secrets(identity, runtime)
    env = runtime.environ
    for credential_id, name, secret in (
            (env.get("OS_APPLICATION_CREDENTIAL_ID"), env.get("OS_APPLICATION_CREDENTIAL_NAME"),
             env.get("OS_APPLICATION_CREDENTIAL_SECRET")),
            (cloud.get("application_credential_id"), cloud.get("application_credential_name"),
             cloud.get("application_credential_secret"))):
        if not secret or not (credential_id or name):
            continue
        if credential_id and identity.application_credential_id not in (None, credential_id):
            continue  # a credential for another context
        access = keystone.application_credential_login(credential_id, secret, expect_identity=False, name=name)
        if identity.application_credential_id not in (None, access.application_credential_id):
            continue  # by name, it turned out to be another one
        _check_project(identity, access)
        return entry_from_access(identity, access, "application_credential")
    if identity.application_credential_id:
        raise LoginRequired(f"no secret for application credential {identity.application_credential_id}",
                            "set OS_APPLICATION_CREDENTIAL_SECRET, or run `kubectl openstack login`")

    password = runtime.getenv("OS_PASSWORD") or cloud.get("password")
    prompted = False
    if not password and interactive:
        password = prompt_password(identity, runtime)
        prompted = True
    if not password:
        raise LoginRequired(f"the Keystone token for {identity.who}, project {identity.project_label} has "
                            "expired and there is nothing to renew it with",
                            "run `kubectl openstack login`")
    access = keystone.password_login(password)
    credential = None
    remember = entry.get("remember_seconds", DEFAULT_REMEMBER_SECONDS)
    if prompted and remember:
        # A person just typed the password: remember the login again, as `login` does.
        credential, notice = remember_login(keystone, access, float(remember))
        if notice:
            runtime.notice(f"kubectl-openstack: {notice}")
    return entry_from_access(identity, access, "password", credential, remember)


def _cloud_secrets(identity: Identity, runtime: Runtime) -> Dict[str, Any]:
    """The secrets of the clouds.yaml entry login used (`--os-cloud`), if it still holds any."""
    if not identity.os_cloud:
        return {}
    from kubectl_caas.clouds import load_cloud

    try:
        cloud = load_cloud(identity.os_cloud)
    except CaasError as exc:
        runtime.notice(f"kubectl-openstack: ignoring clouds.yaml: {exc}")
        return {}
    # The entry's own auth type says which of its secrets logs in (openstacksdk makes it `password`
    # when the file names none), as the openstack command reads it.
    unused = ("password",) if cloud.get("auth_type") == "v3applicationcredential" else (
        "application_credential_id", "application_credential_name", "application_credential_secret")
    return {k: v for k, v in cloud.items() if k not in unused}


def prompt_password(identity: Identity, runtime: Runtime) -> str:
    return runtime.ask_secret(f"Keystone password for {identity.who} ({identity.auth_url}): ") or ""
