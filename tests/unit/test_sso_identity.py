"""SSO settings (kubectl openstack login --sso) stay out of every other login's identity: IAM_*
variables set for kubectl-iam, or the cloudveneto profile's identity provider, must never change
the exec args or the cache entry of a password or credential login."""
from __future__ import annotations

import pytest

from kubectl_caas.cli import openstack_login as flows
from kubectl_caas.errors import UsageError
from kubectl_caas.keystone.federation import SSO_FIELDS, check_sso_identity
from kubectl_caas.runtime import Runtime

ENV = {"OS_AUTH_URL": "https://keystone.example.org:5000", "OS_USERNAME": "alice", "OS_PROJECT_NAME": "CMS",
       "IAM_ISSUER": "https://iam.example.org/", "IAM_CLIENT_ID": "caas", "IAM_AUDIENCE": "keystone",
       "OS_IDENTITY_PROVIDER": "infn-cc", "HOME": "/nonexistent"}


def identity(sso: bool, env=ENV, flags=None):
    rt = Runtime(environ=dict(env))
    settings = flows.load_settings(dict(flags or {}), "cloudveneto", rt)
    return flows.identity_from(settings, sso=sso)


def test_a_password_login_carries_no_sso_field():
    values = identity(sso=False).values()
    assert {f: values[f] for f in SSO_FIELDS} == dict.fromkeys(SSO_FIELDS)
    assert "--issuer" not in identity(sso=False).exec_args()
    assert values["user"] == "alice"


def test_an_sso_login_carries_them_and_no_user():
    ident = identity(sso=True)
    assert (ident.identity_provider, ident.issuer, ident.client_id, ident.audience) == \
        ("infn-cc", "https://iam.example.org/", "caas", "keystone")
    assert ident.user is None and ident.user_id is None
    check_sso_identity(ident)


def test_the_profile_gives_the_identity_provider_and_issuer_but_not_the_client():
    env = {k: v for k, v in ENV.items() if not k.startswith("IAM_") and k != "OS_IDENTITY_PROVIDER"}
    ident = identity(sso=True, env=env)
    assert ident.identity_provider == "infn-cc" and ident.protocol == "openid"
    assert ident.issuer == "https://iam.cloud.infn.it"
    with pytest.raises(UsageError) as refused:
        check_sso_identity(ident)
    assert "--client-id" in str(refused.value)
