"""Keystone backend (keystoneauth1): password and application-credential logins, remembered
application credentials, project listing, token revocation.

It answers the core's one question — "a token for this identity, its expiry, and what is needed to
renew it" — as a cache entry (see `entry_from_access`). One module per part:

- identity.py: who logs in where (the Identity type made from plugins.OPENSTACK_OPTIONS);
- connection.py: the session, time budget, answer checks, error lines and plain REST calls;
- logins.py: `Keystone`, the connection plus its logins (password and passcode, token, application
  credential);
- credentials.py: the cache entry a login makes and the application credential that remembers it;
- renewal.py: get-token's `renew`, trying each source in turn.

This package's namespace is its public face: the plugin record names `kubectl_caas.keystone` as the
backend (get-token calls `renew`), and the CLIs import what they use from here.
"""
from __future__ import annotations

from kubectl_caas.keystone.connection import SERVICE, ApiError
from kubectl_caas.keystone.credentials import (DEFAULT_REMEMBER_SECONDS, FORBIDDEN_NOTICE, MFA_NOTICE, entry_from_access,
                                               remember_login)
from kubectl_caas.keystone.identity import DEFAULT_DOMAIN, Identity, normalise_auth_url
from kubectl_caas.keystone.logins import Keystone
from kubectl_caas.keystone.renewal import prompt_password, renew

__all__ = ["DEFAULT_DOMAIN", "DEFAULT_REMEMBER_SECONDS", "FORBIDDEN_NOTICE", "MFA_NOTICE", "SERVICE", "ApiError",
           "Identity", "Keystone", "entry_from_access", "normalise_auth_url", "prompt_password", "remember_login",
           "renew"]
