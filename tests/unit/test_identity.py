"""Identities declared once (identity.py, the tables in plugins.py): every option round-trips
between argv and identity, cache entries keep the file names earlier releases gave them, and an
option added to a table reaches get-token's parsing, the exec args, the cache key, the help and the
environment fallback with no other edit."""
from __future__ import annotations

import dataclasses
import os

import pytest
import typer
from typer.testing import CliRunner

from kubectl_caas import identity
from kubectl_caas.cli import options
from kubectl_caas.identity import Option
from kubectl_caas.plugins import IAM, OPENSTACK, PLUGINS, Plugin
from kubectl_caas.settings import Settings

REQUIRED = {"openstack": {"auth_url": "https://keystone.example.org:5000/v3"},
            "iam": {"issuer": "https://iam.example.org", "client_id": "kubectl"}}


def typed(plugin: Plugin):
    if plugin is OPENSTACK:
        from kubectl_caas.keystone import Identity
        return Identity
    from kubectl_caas.oidc import Client
    return Client


@pytest.mark.parametrize("plugin, option", [(p, o) for p in PLUGINS.values() for o in identity.exec_options(p.options)],
                         ids=lambda x: getattr(x, "flag", getattr(x, "name", "")))
def test_every_option_round_trips_between_argv_and_values(plugin, option):
    values = dict(REQUIRED[plugin.name])
    values.setdefault(option.field, "value with spaces=and-equals")
    args = identity.to_args(plugin.options, values)
    assert args[0] == "get-token" and f"--{option.flag}" in args
    parsed, flags = identity.parse_args(plugin.options, args[1:], plugin.command)
    assert parsed == values and flags == {}
    # --name=value is the same as --name value
    joined = [f"{a}={b}" for a, b in zip(args[1::2], args[2::2])]
    assert identity.parse_args(plugin.options, joined, plugin.command)[0] == values


@pytest.mark.parametrize("plugin", PLUGINS.values(), ids=lambda p: p.name)
def test_a_typed_identity_round_trips_through_its_exec_args(plugin):
    kind = typed(plugin)
    values = dict(REQUIRED[plugin.name], cacert="/etc/ca.pem", token_storage="keyring")
    if plugin is OPENSTACK:
        values.update(user="alice", user_domain="Physics", project="CMS", project_id="p-1", os_cloud="openstack",
                      application_credential_id="ac-1")
    else:
        values.update(scope="openid groups", audience="https://kube.example.org", token="access")
    made = kind(**values)
    again = kind.from_values(identity.from_args(plugin.options, made.exec_args(), plugin.command))
    assert again == made
    assert dataclasses.is_dataclass(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.cacert = "/elsewhere.pem"


@pytest.mark.parametrize("plugin, args, name", [
    # Names computed with the previous release's code (commit 4d6e68c): a user's cache survives.
    ("openstack", ["--auth-url", "https://keystone.example.org:5000/v3", "--user", "alice", "--user-domain-id",
                   "default", "--project", "CMS", "--project-domain-id", "default"],
     "openstack-alice_CMS-a8e0aa6b48fc7c84.json"),
    ("openstack", ["--auth-url", "https://k.example/v3", "--user", "bob@infn.it", "--user-domain", "Physics",
                   "--project", "QST", "--project-domain", "Physics", "--cacert", "/etc/ca.pem", "--token-storage",
                   "keyring"], "openstack-bob@infn.it_QST-7800013d21d42af5.json"),
    ("openstack", ["--auth-url", "https://k.example/v3", "--user", "alice", "--user-domain-id", "default",
                   "--project-id", "0123abcd", "--project-domain-id", "default", "--application-credential-id", "ac-42",
                   "--os-cloud", "openstack"], "openstack-alice_ac-42-638aba729ad960e2.json"),
    ("iam", ["--issuer", "https://iam.cloud.infn.it", "--client-id", "kubectl-caas"],
     "iam-kubectl-caas-45c29f7b4083dd37.json"),
    ("iam", ["--issuer", "https://iam.quantumtea.it", "--client-id", "c 1", "--scope", "openid profile", "--audience",
             "https://kube.example.org", "--token", "access", "--cacert", "/ca.pem"], "iam-c_1-60b9a56688aba6c4.json"),
])
def test_cache_entries_keep_the_names_earlier_releases_gave_them(plugin, args, name):
    record = PLUGINS[plugin]
    values, _ = identity.parse_args(record.options, args, record.command)
    assert os.path.basename(record.entry_path(values)) == name


def test_an_option_added_to_a_table_is_everywhere_with_no_other_edit(monkeypatch):
    extra = Option("region", "the region to use", env=("OS_REGION_NAME",), key=True)
    plugin = Plugin("openstack", OPENSTACK.options + (extra,), OPENSTACK.backend, OPENSTACK.cli,
                    OPENSTACK.default_profile, OPENSTACK.service, OPENSTACK.server_option, OPENSTACK.bearers,
                    OPENSTACK.bearer_option, OPENSTACK.long_term_secrets, OPENSTACK.renew_sources, OPENSTACK.example)
    base = ["--auth-url", "https://k/v3", "--user", "alice"]
    # get-token parses it, the exec args carry it, the cache key holds it
    values, _ = identity.parse_args(plugin.options, base + ["--region", "RegionTwo"], plugin.command)
    assert values["region"] == "RegionTwo"
    assert identity.to_args(plugin.options, values)[-2:] == ["--region", "RegionTwo"]
    assert plugin.entry_path(values) != plugin.entry_path({k: v for k, v in values.items() if k != "region"})
    # a login falls back to its environment variable
    monkeypatch.setenv("OS_REGION_NAME", "RegionThree")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    assert Settings.load(plugin, {}, os.environ, "none").get("region") == "RegionThree"
    # and a login's --help shows it with that variable
    app = typer.Typer(rich_markup_mode=None)

    @app.command()
    @options.with_identity_options(plugin)
    def login(identity_flags: dict) -> None:
        print(identity_flags["region"])

    runner = CliRunner()
    shown = " ".join(runner.invoke(app, ["--help"], terminal_width=200).output.split())
    assert "--region" in shown and "OS_REGION_NAME" in shown
    assert runner.invoke(app, ["--region", "RegionOne"]).output.strip() == "RegionOne"


def test_secrets_are_never_exec_args_nor_cache_keys():
    for plugin in PLUGINS.values():
        for option in plugin.options:
            if option.secret:
                assert option not in identity.exec_options(plugin.options)
                assert not option.key


def test_get_token_names_the_renewal_environment_from_the_table():
    assert "OS_PASSWORD" in OPENSTACK.renewal_environment and "OS_APPLICATION_CREDENTIAL_SECRET" in \
        OPENSTACK.renewal_environment
    assert IAM.renewal_environment == ("IAM_CLIENT_SECRET", "OIDC_SOCK")
