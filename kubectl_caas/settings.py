"""Where each setting comes from: command-line flag > environment > config file > site profile.

The config file is ``$KUBECTL_CAAS_CONFIG``, else ``$XDG_CONFIG_HOME/kubectl-caas/config.yaml``
(``~/.config/kubectl-caas/config.yaml``). It has one section per plugin::

    openstack:
      profile: cloudveneto        # built-in site profile to start from
      server: https://caas.example.org:6443
      certificate_authority: /etc/pki/caas-ca.pem
    iam:
      issuer: https://iam.cloud.infn.it
      client_id: my-client

A site can ship defaults by installing such a file and pointing KUBECTL_CAAS_CONFIG at it, as
a profile file in ``<config dir>/profiles/<name>.json`` (same keys as the built-in profiles), or
baked into a single-file build (``plugins/build.py --site``): the build then carries
``kubectl_caas/site.json`` and the site's section for each plugin is that build's default profile,
with its CA bundles as PEM text.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from kubectl_caas.errors import UsageError
from kubectl_caas.plugins import Plugin


# Profile keys that name a CA bundle for requests to Keystone or the OIDC provider. The code that uses
# them wants a file (requests' `verify`, and the path written into the kubeconfig's get-token
# arguments), so PEM text is written to one first. (The API server's CA, certificate_authority, goes
# into the kubeconfig as data and may stay text.)
CA_KEYS = ("cacert",)
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def config_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "kubectl-caas")


def config_path() -> str:
    return os.environ.get("KUBECTL_CAAS_CONFIG") or os.path.join(config_dir(), "config.yaml")


def load_config_file(plugin: str) -> Dict[str, Any]:
    path = config_path()
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path}: {exc.strerror}") from None
    import yaml

    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError:
        raise UsageError(f"the config file {path} is not valid YAML", "fix it or move it away") from None
    if not isinstance(data, dict):
        raise UsageError(f"the config file {path} must be a mapping with `{plugin}:` inside")
    section = data.get(plugin) or {}
    if not isinstance(section, dict):
        raise UsageError(f"the config file {path}: `{plugin}` must be a mapping of settings")
    return section


def load_profile(name: str, plugin: Optional[str] = None) -> Dict[str, Any]:
    """A site profile: a user's own `<config dir>/profiles/NAME.json` first, then the site baked into
    this build (when it is NAME and has a section for `plugin`), then the built-in one."""
    own = os.path.join(config_dir(), "profiles", f"{name}.json")
    try:
        with open(own, "rb") as handle:
            raw = handle.read()
        where = own
    except FileNotFoundError:
        baked = baked_profile(plugin) if plugin else None
        if baked is not None and baked[0] == name:
            return dict(baked[1])
        raw = _builtin_profile(name)
        where = f"built-in profile {name}"
    except OSError as exc:
        raise UsageError(f"cannot read the site profile {own}: {exc.strerror}") from None
    if raw is None:
        raise UsageError(f"unknown site profile {name!r}",
                         f"use one of: {', '.join(builtin_profiles())}, or create {own}")
    try:
        data = json.loads(raw)
    except ValueError:
        raise UsageError(f"the site profile {where} is not valid JSON") from None
    if not isinstance(data, dict):
        raise UsageError(f"the site profile {where} must be a JSON object")
    return data


def _builtin_profile(name: str) -> Optional[bytes]:
    # pkgutil reads package data from a directory or from inside the single-file (zip) build alike
    import pkgutil

    if not name.replace("-", "").replace("_", "").isalnum():
        return None
    try:
        return pkgutil.get_data("kubectl_caas", f"profiles/{name}.json")
    except (OSError, FileNotFoundError):
        return None


def builtin_profiles() -> Iterable[str]:
    from importlib import resources

    folder = resources.files("kubectl_caas") / "profiles"
    names = {entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".json")}
    site = baked_site()
    return sorted(names | ({site["name"]} if site else set()))


_baked: Dict[str, Any] = {}


def baked_site() -> Optional[Dict[str, Any]]:
    """The site this single-file build was made for (`plugins/build.py --site`), or None.

    Its `name` and `built` date, and one profile per plugin under `openstack` and `iam`. A build
    checked it when it wrote it, so here it is only read.
    """
    if "site" not in _baked:
        import pkgutil

        try:
            raw = pkgutil.get_data("kubectl_caas", "site.json")
        except OSError:
            raw = None
        _baked["site"] = json.loads(raw) if raw else None
    return _baked["site"]


def baked_profile(plugin: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(site name, the site's profile for `plugin`) when this build carries a site with such a section."""
    site = baked_site()
    if site and isinstance(site.get(plugin), dict):
        return site["name"], site[plugin]
    return None


def default_profile(plugin: Plugin) -> str:
    """The profile used when nobody names one: the baked site's, else the plugin's built-in default."""
    baked = baked_profile(plugin.name)
    return baked[0] if baked else plugin.default_profile


def with_ca_files(profile: Dict[str, Any]) -> Dict[str, Any]:
    """The profile with each CA given as PEM text replaced by the path of a file holding it.

    The file is `ca-<hash of the PEM>.pem` in the token cache directory, written 0600 through the
    cache's own checks (a directory of the user's, no symbolic links): the path goes into the
    kubeconfig's get-token arguments, so it must outlive this build's unpacked payload (a newer
    build unpacks elsewhere and old ones may be deleted), and the file decides which server gets
    the password, so no one else may be able to replace it. Named by content, it is the same file
    for every build that carries the same CA.
    """
    pem_keys = [key for key in CA_KEYS if isinstance(profile.get(key), str) and PEM_CERTIFICATE in profile[key]]
    if not pem_keys:
        return profile
    import hashlib

    from kubectl_caas import cache

    resolved = dict(profile)
    for key in pem_keys:
        data = profile[key].encode()
        path = os.path.join(cache.cache_dir(), f"ca-{hashlib.sha256(data).hexdigest()[:16]}.pem")
        cache.write_cache_file(path, data)
        resolved[key] = path
    return resolved


# Settings of the cluster side, read from the environment by both plugins.
CLUSTER_ENVIRONMENT = {"server": ("CAAS_SERVER",), "certificate_authority": ("CAAS_CERTIFICATE_AUTHORITY",)}


@dataclass
class Settings:
    """Resolved settings for one command: flag > environment variable > clouds.yaml entry (only
    kubectl-openstack has one) > config file > site profile. The environment variables of an
    identity setting are those of its option in the plugin's table (plugins.py)."""

    plugin: Plugin
    flags: Dict[str, Any]
    environ: Mapping[str, str]
    config: Dict[str, Any] = field(default_factory=dict)
    profile: Dict[str, Any] = field(default_factory=dict)
    profile_name: Optional[str] = None
    cloud: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, plugin: Plugin, flags: Dict[str, Any], environ: Mapping[str, str],
             profile: Optional[str] = None) -> "Settings":
        config = load_config_file(plugin.name)
        name = profile or environ.get("KUBECTL_CAAS_PROFILE") or config.get("profile") \
            or default_profile(plugin)
        data = load_profile(name, plugin.name) if name != "none" else {}
        if data.get("plugin") not in (None, plugin.name):
            if profile:
                raise UsageError(f"site profile {name!r} is for kubectl-{data['plugin']}, not {plugin.command}")
            # KUBECTL_CAAS_PROFILE or a shared setting names the other plugin's profile: use ours.
            name = default_profile(plugin)
            data = load_profile(name, plugin.name)
        return cls(plugin, flags, environ, config, with_ca_files(data), name)

    def environment_names(self, key: str) -> Tuple[str, ...]:
        option = next((o for o in self.plugin.options if o.field == key), None)
        return option.env if option is not None else CLUSTER_ENVIRONMENT.get(key, ())

    def get(self, key: str, default: Any = None) -> Any:
        """The first of: flag, the key's environment variables in order, clouds.yaml entry, config
        file, profile, `default`. A flag for one spelling of a pair (user name or id, project name
        or id) names it outright: the other spelling is then not taken from the layers below,
        where it may be left over from another project."""
        option = next((o for o in self.plugin.options if o.field == key), None)
        if option is not None and option.pair and (self.flags.get(key) or self.flags.get(option.pair)):
            return self.flags.get(key) or default
        candidates = [self.flags.get(key), *(self.environ.get(name) for name in self.environment_names(key)),
                      self.cloud.get(key)]
        if option is None or not option.secret:  # a secret never comes from a config file or a profile
            candidates += [self.config.get(key), self.profile.get(key)]
        return next((value for value in candidates if value not in (None, "")), default)

    def hint(self, key: str) -> Optional[str]:
        return self.profile.get(f"{key}_hint")
