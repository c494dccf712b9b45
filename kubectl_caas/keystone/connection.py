"""A connection to one Keystone: the session (our timeouts, CA, redirect refusal and --debug
logging, from http.py), one time budget per operation, the checks every login answer passes before
anything trusts it, keystoneauth1's errors turned into our one-line ones, and the plain REST calls
on the identity endpoint (projects, application credentials, token revocation).

The logins themselves are in logins.py, on top of this class: they are the part that grows with
each authentication method, this is the part they share.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
import socket
from typing import Any, Dict, List, Optional

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session

from kubectl_caas import http
from kubectl_caas.errors import EXIT_AUTH, CaasError
from kubectl_caas.keystone.identity import Identity
from kubectl_caas.runtime import Runtime

# keystoneauth1 logs its retries as warnings; with no handler Python would print them to stderr.
# Our own --debug output and error lines say what happened.
logging.getLogger("keystoneauth").addHandler(logging.NullHandler())

SERVICE = "Keystone"
CACERT_HINT = ("pass the CA bundle with --cacert or OS_CACERT (CloudVeneto users: CloudVenetoCAs.pem)")


class Connection:
    """A session with one Keystone, for one run (its Runtime: clock, --debug)."""

    def __init__(self, identity: Identity, runtime: Runtime):
        self.identity = identity
        self.runtime = runtime
        self.verify = http.verify_for(identity.cacert)
        self.session = ks_session.Session(
            session=http.new_session(SERVICE, identity.auth_url, "--auth-url", debug=runtime.debug),
            verify=self.verify, timeout=http.total_timeout(runtime.environ), user_agent="kubectl-caas")

    # -- login answers --------------------------------------------------------------------------

    def _get_access(self, auth, action: str, project_id: Optional[str] = None, expect_identity: bool = True,
                    scoped: bool = True):
        """auth.get_access within our time budget, retried when Keystone answers a transient 5xx; the
        answer checked before anything trusts it (see `_checked`)."""
        deadline = http.Deadline(SERVICE, self.identity.auth_url, http.total_timeout(self.runtime.environ))

        def attempt():
            self.session.timeout = deadline.timeout()
            return auth.get_access(self.session)

        sent = self.runtime.clock()
        try:
            access = http.with_retries(attempt, _transient, deadline, self.runtime)
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

    # -- plain REST calls on the identity endpoint -----------------------------------------------

    def _call(self, method: str, path: str, token: str, action: str, ok=(200,), **kwargs: Any):
        """One REST call on the identity endpoint; GET and DELETE are retried on a transient 5xx."""
        url = self.identity.auth_url + path
        headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
        deadline = http.Deadline(SERVICE, self.identity.auth_url, http.total_timeout(self.runtime.environ))

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
                                 self.runtime)

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

