"""The OIDC backend of kubectl-iam (authlib for client authentication, joserfc for ID tokens):
discovery, the device authorization grant (RFC 8628), browser sign-in (authorization code with
PKCE, RFC 7636 and RFC 8252), refresh, revocation (RFC 7009).

Like the Keystone backend it answers the core's one question with a cache entry holding the
bearer tokens, their expiry and what renews them (the refresh token). The plugin record names
this package as the backend: get-token calls `renew`, and the CLI uses the rest of what is
imported here. One module per verb:

  client.py    the client identity (issuer, client id, scope, ...) and its checks
  provider.py  one issuer over HTTP: discovery, endpoints, keys, form POSTs, refresh, revoke
  device.py    the device flow: code, announcement, polling
  browser_flow.py  browser sign-in: authorization code with PKCE through a loopback redirect
  qr.py        the device flow's link as a QR code on a terminal
  registration.py  dynamic client registration (RFC 7591/7592) for `login --register`
  service.py   service accounts: the client credentials grant, secret from the environment only
  agent.py     an oidc-agent account as the token source (its UNIX-socket protocol)
  tokens.py    ID-token verification, expiries, the cache entry made from a token answer
  renewal.py   get-token's renewal: agent, client credentials, refresh, else a new sign-in or
               "login required"
"""
from __future__ import annotations

from kubectl_caas.oidc.browser_flow import browser_login
from kubectl_caas.oidc.client import DEFAULT_SCOPE, Client, check_issuer_url, normalise_issuer
from kubectl_caas.oidc.device import DEVICE_GRANT, announce, device_login, poll_device_flow, start_device_flow
from kubectl_caas.oidc.provider import OAuthError, Provider
from kubectl_caas.oidc.renewal import provider_for, renew
from kubectl_caas.oidc.tokens import entry_from_tokens, verify_id_token

__all__ = [
    "DEFAULT_SCOPE", "DEVICE_GRANT", "Client", "OAuthError", "Provider", "announce", "browser_login",
    "check_issuer_url", "device_login", "entry_from_tokens", "normalise_issuer", "poll_device_flow", "provider_for",
    "renew", "start_device_flow", "verify_id_token",
]
