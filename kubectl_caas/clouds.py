"""clouds.yaml entries, read by openstacksdk's own loader (`openstack.config`), as every OpenStack
tool reads them.

openstacksdk finds the files (OS_CLIENT_CONFIG_FILE, falling back to the usual search when it
names no file; ./, $XDG_CONFIG_HOME/openstack, /etc/xdg/openstack, /etc/openstack), merges
secure.yaml (OS_CLIENT_SECURE_FILE) over clouds.yaml, applies vendor profiles and regions, and
rewrites the legacy spellings (`tenant_name`, a `domain_name` meant for both user and project).
We take the merged entry from it and nothing else: the OS_* variables and flags are applied above
it by the caller, which is python-openstackclient's order (its `--os-*` options default to the
OS_* variables and beat the file).

Imported by every `kubectl openstack login` (to learn which cloud the openstack command would
pick when none is named; measured at about 0.1-0.15 s) and by a renewal that falls back to the
entry's secret; never on the get-token cache hit.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional

from kubectl_caas.errors import UsageError

# Our setting names, from the entry's `auth` keys as openstacksdk leaves them.
AUTH_KEYS = {
    "auth_url": "auth_url",
    "user": "username",
    "user_id": "user_id",
    "user_domain": "user_domain_name",
    "user_domain_id": "user_domain_id",
    "project": "project_name",
    "project_id": "project_id",
    "project_domain": "project_domain_name",
    "project_domain_id": "project_domain_id",
    "password": "password",
    "application_credential_id": "application_credential_id",
    "application_credential_name": "application_credential_name",
    "application_credential_secret": "application_credential_secret",
}
SECRETS = ("password", "application_credential_secret")


def _config():
    from openstack.config import loader

    try:
        # load_envvars: without it openstacksdk also ignores OS_CLIENT_CONFIG_FILE; the cloud it then
        # makes of the OS_* variables ("envvars") is never one we read.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loader.OpenStackConfig(load_envvars=True)
    except Exception as exc:  # noqa: BLE001 - openstacksdk reports a broken file in many ways
        raise UsageError(f"cannot read clouds.yaml: {_reason(exc)}", "fix the file, or set OS_CLIENT_CONFIG_FILE") \
            from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def load_cloud(name: str) -> Dict[str, Any]:
    """The named entry in our setting names (see AUTH_KEYS), plus `auth_type`, `cacert` and
    `verify` when the entry sets them. UsageError when there is no such entry."""
    config = _config()
    names = _named_clouds(config)
    if name not in names:
        known = ", ".join(names) or "none"
        raise UsageError(f"no cloud named {name!r} in clouds.yaml", f"known clouds: {known}")
    try:
        with warnings.catch_warnings():
            # openstacksdk warns about its own future (metrics libraries...): not the user's concern
            warnings.simplefilter("ignore")
            region = config.get_one(cloud=name, validate=False)
    except Exception as exc:  # noqa: BLE001 - as above
        raise UsageError(f"cannot read cloud {name!r} from clouds.yaml: {_reason(exc)}") from None
    entry = region.config
    auth = entry.get("auth") or {}
    flat: Dict[str, Any] = {ours: auth.get(theirs) for ours, theirs in AUTH_KEYS.items()}
    flat["auth_type"] = entry.get("auth_type")
    flat["cacert"] = entry.get("cacert")
    # verify: false, or the older insecure: true (read when the session is made, so not folded in yet)
    if entry.get("verify") is False or str(entry.get("insecure")).lower() == "true":
        flat["verify"] = False
    return {k: v for k, v in flat.items() if v not in (None, "")}


# Clouds openstacksdk makes up: of the OS_* variables, and a stand-in when no file exists.
_MADE_UP = ("envvars", "defaults")


def _named_clouds(config) -> List[str]:
    return sorted(n for n in config.get_cloud_names() if n not in _MADE_UP)


def cloud_names() -> List[str]:
    """The clouds the files define, for a hint when none was chosen; empty when there is no file."""
    try:
        return _named_clouds(_config())
    except UsageError:
        return []


def default_cloud() -> Optional[str]:
    """The cloud the openstack command would use when none is named: OS_CLOUD; else, when no other
    OS_* variable describes a cloud, the only one clouds.yaml defines; else None."""
    try:
        chosen = _config().default_cloud
    except UsageError:
        return None
    return chosen if chosen and chosen not in _MADE_UP else None


def hint_for_unchosen_cloud(default: Optional[str] = None) -> Optional[str]:
    """'pass --os-cloud NAME ...' when clouds.yaml defines clouds but none was chosen."""
    names = cloud_names()
    if not names:
        return default
    if len(names) == 1:
        return f"your clouds.yaml defines cloud {names[0]!r}: pass --os-cloud {names[0]} or set OS_CLOUD={names[0]}"
    return f"your clouds.yaml defines clouds {', '.join(names)}: choose one with --os-cloud NAME or OS_CLOUD"
