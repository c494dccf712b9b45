"""What a Keystone login leaves behind for kubectl: the cache entry (`entry_from_access`) and the
application credential that keeps it renewable without a password (`remember_login`).

Both the CLI's login and get-token's renewal (after a password typed at the prompt) end here, so
an entry and a remembered credential look the same whichever made them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from kubectl_caas.errors import AuthError
from kubectl_caas.keystone.identity import Identity
from kubectl_caas.keystone.logins import Keystone

DEFAULT_REMEMBER_SECONDS = 7 * 24 * 3600

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


def entry_from_access(identity: Identity, access, method: str,
                      application_credential: Optional[Dict[str, Any]] = None,
                      remember_seconds: Optional[float] = None) -> Dict[str, Any]:
    """The cache entry for a checked login answer (see Connection._checked); times in local time."""
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

