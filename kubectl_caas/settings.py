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

A site can ship defaults by installing such a file and pointing KUBECTL_CAAS_CONFIG at it, or as
a profile file in ``<config dir>/profiles/<name>.json`` (same keys as the built-in profiles).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

from kubectl_caas.errors import UsageError

DEFAULT_PROFILE = {"openstack": "cloudveneto", "iam": "infn-iam"}


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


def load_profile(name: str) -> Dict[str, Any]:
    """A site profile: a user's own `<config dir>/profiles/NAME.json` first, then the built-in one."""
    own = os.path.join(config_dir(), "profiles", f"{name}.json")
    try:
        with open(own, "rb") as handle:
            raw = handle.read()
        where = own
    except FileNotFoundError:
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
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".json"))


@dataclass
class Settings:
    """Resolved settings for one command, remembering where each value came from."""

    plugin: str
    flags: Dict[str, Any]
    config: Dict[str, Any] = field(default_factory=dict)
    profile: Dict[str, Any] = field(default_factory=dict)
    profile_name: Optional[str] = None

    @classmethod
    def load(cls, plugin: str, flags: Dict[str, Any], profile: Optional[str] = None) -> "Settings":
        config = load_config_file(plugin)
        name = profile or os.environ.get("KUBECTL_CAAS_PROFILE") or config.get("profile") \
            or DEFAULT_PROFILE[plugin]
        data = load_profile(name) if name != "none" else {}
        if data.get("plugin") not in (None, plugin):
            if profile:
                raise UsageError(f"site profile {name!r} is for kubectl-{data['plugin']}, not kubectl-{plugin}")
            # KUBECTL_CAAS_PROFILE or a shared setting names the other plugin's profile: use ours.
            name = DEFAULT_PROFILE[plugin]
            data = load_profile(name)
        return cls(plugin, flags, config, data, name)

    def get(self, key: str, env: Iterable[str] = (), default: Any = None) -> Any:
        """The first of: flag, the environment variables `env` in order, config file, profile, `default`."""
        candidates = [self.flags.get(key), *(os.environ.get(name) for name in env),
                      self.config.get(key), self.profile.get(key)]
        return next((value for value in candidates if value not in (None, "")), default)

    def hint(self, key: str) -> Optional[str]:
        return self.profile.get(f"{key}_hint")
