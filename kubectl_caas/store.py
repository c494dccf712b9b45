"""Cache entries with their long-term secrets: one module, one lock, for every verb.

Logins, renewals and logouts all read, write and forget an entry here, under its lock
(`locked`). The entry itself is a 0600 file in the token cache (cache.py). Its long-term secrets
(the plugin record's `long_term_secrets`: an application credential's secret; a refresh token and
client secret) stay in that file (`--token-storage disk`, the default) or go to the OS keyring
(`keyring`); the short-lived bearer always stays in the file, so the get-token hit never touches
the keyring. When no keyring works (headless machines, containers) the secrets stay on disk and a
notice says so once, instead of failing or prompting on every call.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from kubectl_caas import cache, locks
from kubectl_caas.errors import CaasError

if TYPE_CHECKING:
    from kubectl_caas.plugins import Plugin
    from kubectl_caas.runtime import Runtime

SERVICE = "kubectl-caas"
STORAGES = ("disk", "keyring")
NOTICE_MARKER = ".keyring-unavailable-notified"


def locked(cache_path: str) -> locks.EntryLock:
    """The entry's lock: held by whoever reads, renews, replaces or forgets it."""
    return locks.EntryLock(cache_path)


def _keyring():
    """The keyring module when a real backend is configured, else None."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:  # noqa: BLE001 - a broken keyring setup is the same as none
        return None
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
        return None
    return keyring


def _get(entry: Dict[str, Any], path: Tuple[str, ...]) -> Any:
    value: Any = entry
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _set(entry: Dict[str, Any], path: Tuple[str, ...], value: Any) -> None:
    target = entry
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _item_name(cache_path: str, path: Tuple[str, ...]) -> str:
    return os.path.basename(cache_path)[: -len(".json")] + ":" + ".".join(path)


def _notify_once(reason: str, runtime: Optional[Runtime]) -> None:
    marker = os.path.join(cache.cache_dir(), NOTICE_MARKER)
    if os.path.exists(marker):
        return
    message = (f"kubectl-caas: no usable OS keyring ({reason}); keeping secrets in the 0600 token cache "
               "instead (this notice is shown once)")
    if runtime is not None:
        runtime.notice(message)
    else:
        from kubectl_caas.terminal import show

        show(message)
    try:
        cache.write_cache_file(marker, b"")
    except Exception:  # noqa: BLE001 - the notice is best effort
        pass


def _on_disk(plugin: Plugin, cache_path: str, entry: Dict[str, Any], storage: Optional[str],
             runtime: Optional[Runtime]) -> Dict[str, Any]:
    """What the cache file holds for `entry`: with storage 'keyring', its long-term secrets moved
    to the keyring (and replaced by a reference) when a keyring works."""
    import copy

    on_disk = copy.deepcopy(entry)
    if storage == "keyring":
        keyring = _keyring()
        if keyring is None:
            _notify_once("none is configured, or this is a headless session", runtime)
        else:
            try:
                for path in plugin.long_term_secrets:
                    value = _get(on_disk, path)
                    if isinstance(value, str) and value:
                        keyring.set_password(SERVICE, _item_name(cache_path, path), value)
                        _set(on_disk, path, {"stored_in": "keyring"})
            except Exception as exc:  # noqa: BLE001 - fall back to disk rather than fail the login
                _notify_once(f"{type(exc).__name__}", runtime)
                on_disk = copy.deepcopy(entry)
    return on_disk


def save(plugin: Plugin, cache_path: str, entry: Dict[str, Any], storage: Optional[str],
         runtime: Optional[Runtime] = None, args: Optional[List[str]] = None) -> None:
    """Write the entry (its lock held); with storage 'keyring', its long-term secrets go to the keyring.

    The entry's ready credentials (ready.py) follow it: removed before it is written, so that none
    outlives the token it was made from, and written again after it for the exec `args` given
    (a login's, a renewal's) and for those each one answered before."""
    from kubectl_caas import ready

    kinds = getattr(plugin, "bearers", ())
    answered = ready.remove(cache_path, kinds) if kinds else {}
    cache.write_entry(cache_path, _on_disk(plugin, cache_path, entry, storage, runtime))
    if args is not None and kinds:
        kind = ready.kind_of(plugin, args)
        if kind is not None:
            answered[kind] = list(args)
    if answered:
        ready.write(plugin, cache_path, entry, answered)


def replace(plugin: Plugin, cache_path: str, entry: Dict[str, Any], storage: Optional[str],
            runtime: Optional[Runtime] = None, before: Optional[Any] = None,
            args: Optional[List[str]] = None) -> Dict[str, Any]:
    """A login's entry saved under the lock; returns the entry it replaced (secrets filled in), {}
    if none. `before(new, previous)` runs first, under the same lock. `args`: the kubeconfig's
    exec args for this login, for its ready credential."""
    with locked(cache_path):
        previous = load(plugin, cache_path, cache.read_entry(cache_path)) or {}
        if before is not None:
            before(entry, previous)
        save(plugin, cache_path, entry, storage, runtime, args)
    return previous


# Parts of an entry kept only to save round trips (OIDC discovery and keys): dropped first when the
# whole entry cannot be written.
DISPOSABLE = ("metadata", "jwks")


def save_renewed(plugin: Plugin, cache_path: str, entry: Dict[str, Any], storage: Optional[str],
                 runtime: Optional[Runtime] = None, args: Optional[List[str]] = None) -> Optional[str]:
    """Save what a renewal produced, trying harder than `save`: the renewal already happened (and
    may have rotated the refresh token), so failing here would throw it away. Returns None when
    saved whole, else one line saying what was kept and what to do."""
    try:
        save(plugin, cache_path, entry, storage, runtime, args)
        return None
    except (OSError, CaasError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
    slim = {k: v for k, v in entry.items() if k not in DISPOSABLE}
    try:
        save(plugin, cache_path, slim, storage, runtime, args)
        return f"the token cache is short of space ({reason}); saved the renewed token in a smaller cache entry"
    except (OSError, CaasError):
        pass
    from kubectl_caas import ready

    ready.remove(cache_path, getattr(plugin, "bearers", ()))  # the old token's: the entry changes under it
    if cache.overwrite_entry_in_place(cache_path, _on_disk(plugin, cache_path, slim, storage, runtime)):
        return (f"could not write the token cache ({reason}); the renewed token was written over the old entry "
                "in place: free some space")
    lost = "" if not entry.get("refresh_token") or entry.get("refresh_token") == (
        cache.read_entry(cache_path) or {}).get("refresh_token") else (
        f"; the refresh token the provider just issued is lost too: run `kubectl {plugin.name} login` once it is fixed")
    return (f"could not save the renewed token in the token cache ({reason}); kubectl has it, but the next "
            f"command must renew again{lost}")


def load(plugin: Plugin, cache_path: str, entry: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The entry with secrets kept in the keyring filled back in (missing ones are dropped)."""
    if not entry:
        return entry
    refs = [path for path in plugin.long_term_secrets if isinstance(_get(entry, path), dict)]
    if not refs:
        return entry
    keyring = _keyring()
    for path in refs:
        value = None
        if keyring is not None:
            try:
                value = keyring.get_password(SERVICE, _item_name(cache_path, path))
            except Exception:  # noqa: BLE001 - treated as a missing secret: renewal falls back
                value = None
        if value:
            _set(entry, path, value)
        elif len(path) == 1:
            entry.pop(path[0], None)
        else:
            _get(entry, path[:-1]).pop(path[-1], None)
    return entry


def for_logout(plugin: Plugin, cache_path: str, name: str, runtime: Runtime) -> Optional[Dict[str, Any]]:
    """The entry a logout works on (its lock held by the caller), secrets filled in, or None when
    there is nothing to revoke. An entry that exists but cannot be used (corrupt, oversized,
    planted) is forgotten here: leaving it would keep whatever secret it holds on disk while saying
    "logged out"."""
    state, entry, reason = cache.inspect_entry(cache_path)
    if state == cache.UNREADABLE:
        forget(plugin, cache_path)
        runtime.notice(f"{name}: removed a cache entry that could not be read ({reason}); any token in it could "
                       "not be revoked and expires on its own")
        return None
    if state == cache.UNTRUSTED:
        raise CaasError(f"cannot log out of {name}: {reason}")
    if entry is None:
        runtime.notice(f"{name}: already logged out")
        return None
    return load(plugin, cache_path, entry)


def storage_note(plugin: Plugin, storage: Optional[str], entry: Optional[Dict[str, Any]]) -> str:
    """For `status`: where the entry's long-term secrets are, when the keyring was asked for."""
    if storage != "keyring" or not entry:
        return ""
    on_disk = [path for path in plugin.long_term_secrets if isinstance(_get(entry, path), str)]
    if on_disk:
        return ", long-term secret on disk in the 0600 token cache (the keyring asked for was unavailable)"
    return ", long-term secret in the keyring"


def forget(plugin: Plugin, cache_path: str) -> None:
    """Delete the entry and whatever it kept in the keyring. An entry that cannot be read may have
    kept secrets there too, so then the keyring items are deleted as well."""
    entry = cache.read_entry(cache_path)
    if entry is None or any(isinstance(_get(entry, path), dict) for path in plugin.long_term_secrets):
        keyring = _keyring()
        if keyring is not None:
            for path in plugin.long_term_secrets:
                try:
                    keyring.delete_password(SERVICE, _item_name(cache_path, path))
                except Exception:  # noqa: BLE001 - already gone
                    pass
    from kubectl_caas import ready

    ready.remove(cache_path, getattr(plugin, "bearers", ()))
    cache.delete_entry(cache_path)
