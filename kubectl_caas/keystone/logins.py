"""The Keystone logins: password (with a TOTP passcode when Keystone's multi-factor rules ask for
one), token rescoping to a project, and application credential, each as keystoneauth1 builds it.

`Keystone` is the connection (connection.py) plus these; it is what the CLIs and the renewal use.
Every login answer goes through the connection's checks, and every refusal becomes an AuthError
that says what to do.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1.identity import v3

from kubectl_caas.errors import AuthError, UsageError
from kubectl_caas.keystone.connection import Connection
from kubectl_caas.keystone.identity import Identity
from kubectl_caas.runtime import Runtime


class Keystone(Connection):
    """A connection to one Keystone that logs in.

    When Keystone's multi-factor rules want a TOTP passcode after the password, it comes from
    OS_PASSCODE, else (`interactive`) from the person at the terminal.
    """

    def __init__(self, identity: Identity, runtime: Runtime, interactive: bool = True):
        super().__init__(identity, runtime)
        self.interactive = interactive
        self._passcode: Optional[str] = None
        self.used_passcode = False  # a login of this session needed the TOTP second factor

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

