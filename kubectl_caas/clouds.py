"""clouds.yaml support without openstacksdk (which takes half a second to import).

Search order as openstacksdk: OS_CLIENT_CONFIG_FILE, then ./, ~/.config/openstack/, /etc/openstack/;
file names clouds.yaml, clouds.yml, clouds.json; secure.yaml (same places) is merged on top.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from kubectl_caas.errors import UsageError

NAMES = ("clouds.yaml", "clouds.yml", "clouds.json")
SECURE_NAMES = ("secure.yaml", "secure.yml", "secure.json")


def search_dirs() -> List[str]:
    return [os.getcwd(), os.path.join(os.path.expanduser("~"), ".config", "openstack"), "/etc/openstack"]


def _first(names, explicit_env: Optional[str]) -> Optional[str]:
    if explicit_env and os.environ.get(explicit_env):
        return os.environ[explicit_env]
    for directory in search_dirs():
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return None


def _load(path: str) -> Dict[str, Any]:
    import yaml

    try:
        with open(path, "rb") as handle:
            data = yaml.safe_load(handle.read()) or {}
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise UsageError(f"{path} is not valid YAML") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must be a mapping with `clouds:` inside")
    return data


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_cloud(name: str) -> Dict[str, Any]:
    """The named cloud's settings, flattened to our option names (auth_url, user, password, ...)."""
    path = _first(NAMES, "OS_CLIENT_CONFIG_FILE")
    if not path:
        raise UsageError(f"cloud {name!r} requested but no clouds.yaml found",
                         "put it in ~/.config/openstack/clouds.yaml or set OS_CLIENT_CONFIG_FILE")
    clouds = _load(path).get("clouds") or {}
    secure_path = _first(SECURE_NAMES, None)
    if secure_path:
        clouds = _merge(clouds, _load(secure_path).get("clouds") or {})
    cloud = clouds.get(name) if isinstance(clouds, dict) else None
    if not isinstance(cloud, dict):
        known = ", ".join(sorted(clouds)) if isinstance(clouds, dict) else ""
        raise UsageError(f"no cloud named {name!r} in {path}", f"known clouds: {known or 'none'}")
    auth = cloud.get("auth") or {}
    flat = {
        "auth_url": auth.get("auth_url"),
        "user": auth.get("username"),
        "user_id": auth.get("user_id"),
        "user_domain": auth.get("user_domain_name") or auth.get("domain_name"),
        "user_domain_id": auth.get("user_domain_id") or auth.get("domain_id"),
        "project": auth.get("project_name") or auth.get("tenant_name"),
        "project_id": auth.get("project_id") or auth.get("tenant_id"),
        "project_domain": auth.get("project_domain_name") or auth.get("domain_name"),
        "project_domain_id": auth.get("project_domain_id") or auth.get("domain_id"),
        "password": auth.get("password"),
        "application_credential_id": auth.get("application_credential_id"),
        "application_credential_secret": auth.get("application_credential_secret"),
        "cacert": cloud.get("cacert"),
    }
    return {k: v for k, v in flat.items() if v not in (None, "")}
