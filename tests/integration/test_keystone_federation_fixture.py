"""Self-tests of the federated Keystone fixture (tests/servers/keystone_federation.py): what
Keystone under Apache + mod_oauth2 answers to IAM-like access tokens, recorded for the client.

Answers seen (Keystone 30.0.0, Apache 2.4 with mod_oauth2 3.3 / liboauth2 1.4.5, mod_wsgi 6.1.1):

- Bearer access token (JWT, iss = issuer, aud = the audience) on the federation auth path, POST or
  GET: 201, unscoped token in X-Subject-Token; body ``token.methods == ["openid"]``,
  ``token.user.name`` = the token's ``sub``, ``token.user["OS-FEDERATION"]`` = identity provider
  ``infn-cc``, protocol ``openid``, ``groups`` [{"id": ...}] (the mapped Keystone groups).
- Wrong audience: 401, Apache's HTML page, no WWW-Authenticate (authorization failed). No token:
  401, ``WWW-Authenticate: Bearer error="invalid_request"``; a token that does not verify: 401,
  ``Bearer error="invalid_token"``. Keystone never sees these requests.
- The two ``Require oauth2_claim`` lines written bare, as published: Apache joins them with "any
  of", and a token of the right issuer with another audience gets 201.
- An identity provider with no <Location> (no mod_oauth2 in front): Keystone's own 404 JSON
  "Could not find Identity Provider: nobody.".
- keystoneauth1 ``OidcAccessToken`` (unscoped token, then the token method with a project scope):
  a project-scoped token, methods ``["token", "openid"]``, roles member and reader.
- The access tokens carry no ``groups`` (as IAM's default profile): a mapping rule on an IAM group
  gives nothing (scoping to its project: 401); ``map_group(None, project)`` is what works.
- Application credential made with a federated user's scoped token: 201 in both variants; logging
  in with it: 201 with ``application_credential`` in ``[auth] methods``, 401 without it
  (CloudVeneto's published methods): "Attempted to authenticate with an unsupported method.".
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.servers.keystone_federation import (
    AUTH_PATH,
    IDENTITY_PROVIDER,
    UNKNOWN_IDP_ANSWER,
    FederatedKeystone,
    device_flow_access_token,
    service_access_token,
)
from tests.servers.keystone_federation_fixtures import FEDERATION_AUDIENCE
from tests.servers.oidc_provider import OIDCProvider

def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def post_bearer(keystone: FederatedKeystone, token: str, path: str = AUTH_PATH) -> requests.Response:
    return requests.post(keystone.url + path, headers={"Authorization": f"Bearer {token}"},
                         verify=str(keystone.ca_cert), timeout=30)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def scoped_token(keystone: FederatedKeystone, access_token: str, project: str) -> tuple[str, dict[str, Any]]:
    """keystoneauth1's OidcAccessToken, as a client would use it: (token, the token's body)."""
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    auth = v3.OidcAccessToken(keystone.auth_url, identity_provider=IDENTITY_PROVIDER, protocol="openid",
                              access_token=access_token, project_name=project, project_domain_id="default")
    sess = session.Session(auth=auth, verify=str(keystone.ca_cert))
    token = sess.get_token()
    status, body = keystone.validate_token(token)
    assert status == 200, body
    return token, body["token"]


@pytest.fixture(scope="module")
def everybody_project(federated_keystone: FederatedKeystone) -> str:
    name = unique("CMS")
    federated_keystone.map_group(None, name)
    return name


def test_access_token_gives_unscoped_token(federated_keystone: FederatedKeystone, oidc_provider: OIDCProvider,
                                           everybody_project: str) -> None:
    access = device_flow_access_token(oidc_provider, FEDERATION_AUDIENCE, login="alice")
    assert claims(access)["iss"] == oidc_provider.issuer and claims(access)["aud"] == FEDERATION_AUDIENCE
    reply = post_bearer(federated_keystone, access)
    assert reply.status_code == 201, reply.text
    assert reply.headers["X-Subject-Token"]
    token = reply.json()["token"]
    assert token["methods"] == ["openid"]
    assert token["user"]["name"] == "alice"
    federation = token["user"]["OS-FEDERATION"]
    assert federation["identity_provider"] == {"id": IDENTITY_PROVIDER}
    assert federation["protocol"] == {"id": "openid"}
    assert len(federation["groups"]) >= 1  # the "everybody" group of everybody_project
    assert "project" not in token and "roles" not in token
    # GET works as well (keystoneauth1 uses POST).
    again = requests.get(federated_keystone.federation_auth_url, headers={"Authorization": f"Bearer {access}"},
                         verify=str(federated_keystone.ca_cert), timeout=30)
    assert again.status_code == 201, again.text


def test_access_tokens_carry_no_groups_so_group_rules_do_not_match(
        federated_keystone: FederatedKeystone, oidc_provider: OIDCProvider) -> None:
    # IAM's default-profile access tokens (and the provider's) have no groups claim: a rule on the
    # IAM group "users" gives nothing, although alice is in "users" (her ID token says so).
    access = device_flow_access_token(oidc_provider, FEDERATION_AUDIENCE, login="alice")
    assert "groups" not in claims(access) and "preferred_username" not in claims(access)
    project = unique("ATLAS")
    federated_keystone.map_group("users", project)
    from keystoneauth1 import exceptions

    with pytest.raises(exceptions.Unauthorized):
        scoped_token(federated_keystone, access, project)


def test_scoped_token_with_keystoneauth1(federated_keystone: FederatedKeystone, oidc_provider: OIDCProvider,
                                         everybody_project: str) -> None:
    access = device_flow_access_token(oidc_provider, FEDERATION_AUDIENCE, login="bob")
    token, body = scoped_token(federated_keystone, access, everybody_project)
    assert body["project"]["name"] == everybody_project
    assert sorted(role["name"] for role in body["roles"]) == ["member", "reader"]  # reader: implied by member
    assert sorted(body["methods"]) == ["openid", "token"]
    assert body["user"]["name"] == "bob"
    assert body["user"]["OS-FEDERATION"]["identity_provider"]["id"] == IDENTITY_PROVIDER


def test_service_account_token(federated_keystone: FederatedKeystone, oidc_provider: OIDCProvider,
                               everybody_project: str) -> None:
    access = service_access_token(oidc_provider, FEDERATION_AUDIENCE)
    reply = post_bearer(federated_keystone, access)
    assert reply.status_code == 201, reply.text
    assert reply.json()["token"]["user"]["name"] == oidc_provider.service_client_id


def test_wrong_audience_refused_by_mod_oauth2(federated_keystone: FederatedKeystone,
                                              oidc_provider: OIDCProvider) -> None:
    access = service_access_token(oidc_provider, "some-other-service")
    reply = post_bearer(federated_keystone, access)
    # The token is valid, the `Require oauth2_claim aud:` fails: Apache's authorization failure,
    # with no WWW-Authenticate.
    assert reply.status_code == 401
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "WWW-Authenticate" not in reply.headers
    assert "X-Subject-Token" not in reply.headers
    # No token, and a token that is no JWT: refused by mod_oauth2's authentication, which says why.
    for headers, error in (({}, "invalid_request"), ({"Authorization": "Bearer not-a-jwt"}, "invalid_token")):
        other = requests.post(federated_keystone.federation_auth_url, headers=headers,
                              verify=str(federated_keystone.ca_cert), timeout=30)
        assert other.status_code == 401
        assert other.headers["Content-Type"].startswith("text/html")
        assert other.headers["WWW-Authenticate"].startswith(f'Bearer error="{error}"')


def test_unknown_identity_provider(federated_keystone: FederatedKeystone, oidc_provider: OIDCProvider) -> None:
    # No <Location> guards it, so Keystone itself answers: the identity provider does not exist.
    access = service_access_token(oidc_provider, FEDERATION_AUDIENCE)
    reply = post_bearer(federated_keystone, access, "/v3/OS-FEDERATION/identity_providers/nobody/protocols/openid/auth")
    assert reply.status_code == UNKNOWN_IDP_ANSWER == 404
    assert reply.json() == {"error": {"code": 404, "message": "Could not find Identity Provider: nobody.",
                                      "title": "Not Found"}}


def test_bare_requires_let_any_audience_through(
        federated_keystone_factory: Callable[..., FederatedKeystone], oidc_provider: OIDCProvider) -> None:
    keystone = federated_keystone_factory(oidc_provider, require_all=False)
    access = service_access_token(oidc_provider, "some-other-service")
    reply = post_bearer(keystone, access)
    assert reply.status_code == 201, reply.text


def login_with_application_credential(keystone: FederatedKeystone, credential: dict[str, Any]) -> requests.Response:
    body = {"auth": {"identity": {"methods": ["application_credential"], "application_credential": {
        "id": credential["id"], "secret": credential["secret"]}}}}
    return requests.post(keystone.auth_url + "/auth/tokens", json=body, verify=str(keystone.ca_cert), timeout=30)


def make_application_credential(keystone: FederatedKeystone, provider: OIDCProvider, login: str) -> dict[str, Any]:
    project = unique("CMS")
    keystone.map_group(None, project)
    access = device_flow_access_token(provider, FEDERATION_AUDIENCE, login=login)
    token, body = scoped_token(keystone, access, project)
    reply = requests.post(keystone.auth_url + f"/users/{body['user']['id']}/application_credentials",
                          headers={"X-Auth-Token": token}, verify=str(keystone.ca_cert), timeout=30,
                          json={"application_credential": {"name": unique("kubectl")}})
    assert reply.status_code == 201, reply.text
    return reply.json()["application_credential"]


def test_application_credential_of_a_federated_user(federated_keystone: FederatedKeystone,
                                                    oidc_provider: OIDCProvider) -> None:
    credential = make_application_credential(federated_keystone, oidc_provider, "carol")
    reply = login_with_application_credential(federated_keystone, credential)
    assert reply.status_code == 201, reply.text
    token = reply.json()["token"]
    assert token["methods"] == ["application_credential"]
    assert sorted(role["name"] for role in token["roles"]) == ["member", "reader"]
    status, _ = federated_keystone.validate_token(reply.headers["X-Subject-Token"])
    assert status == 200


def test_application_credential_refused_with_cloudveneto_methods(
        federated_keystone_factory: Callable[..., FederatedKeystone], oidc_provider: OIDCProvider) -> None:
    keystone = federated_keystone_factory(oidc_provider, app_credentials=False)
    assert keystone.methods == "password,token,mapped,openid"
    credential = make_application_credential(keystone, oidc_provider, "dave")
    reply = login_with_application_credential(keystone, credential)
    assert reply.status_code == 401
    error = reply.json()["error"]
    assert error["code"] == 401 and error["title"] == "Unauthorized"
    assert error["identity"] == {"methods": ["password", "token", "mapped", "openid"]}, error
