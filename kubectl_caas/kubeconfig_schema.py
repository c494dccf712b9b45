"""What kubectl refuses to load, checked before a kubeconfig is used or written.

kubectl decodes each file into client-go's v1.Config (tools/clientcmd/api/v1, types.go) and
converts it (conversion.go there). The tables below are those types, field by field; the checks
are what that decoding refuses: a wrong type in a known field, a name defined twice, another kind
or apiVersion, and what the YAML-to-JSON step before it cannot carry (.nan, .inf, null keys).
Unknown fields pass, as they do in kubectl. tests/integration/test_kubectl_oracle.py has real
kubectl judge every golden file.

A module of its own because it is a table and a walk over it, with no files, locks or errors:
`refusal` gives the reason, and kubeconfig_files.py turns it into the error that names the file.
"""
from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Dict, List, Optional

_EXTENSIONS = ("named", {"name": "string", "extension": "any"})
_CLUSTER = {"server": "string", "tls-server-name": "string", "insecure-skip-tls-verify": "bool",
            "certificate-authority": "string", "certificate-authority-data": "bytes", "proxy-url": "string",
            "disable-compression": "bool", "extensions": _EXTENSIONS}
_EXEC = {"command": "string", "args": ("list", "string"),
         "env": ("list", {"name": "string", "value": "string"}), "apiVersion": "string",
         "installHint": "string", "provideClusterInfo": "bool", "interactiveMode": "string"}
_USER = {"client-certificate": "string", "client-certificate-data": "bytes", "client-key": "string",
         "client-key-data": "bytes", "token": "string", "tokenFile": "string", "as": "string", "as-uid": "string",
         "as-groups": ("list", "string"), "as-user-extra": ("map", ("list", "string")), "username": "string",
         "password": "string", "auth-provider": {"name": "string", "config": ("map", "string")}, "exec": _EXEC,
         "extensions": _EXTENSIONS}
_CONTEXT = {"cluster": "string", "user": "string", "namespace": "string", "extensions": _EXTENSIONS}
_CONFIG = {"kind": "string", "apiVersion": "string",
           "preferences": {"colors": "bool", "extensions": _EXTENSIONS},
           "clusters": ("named", {"name": "string", "cluster": _CLUSTER}),
           "users": ("named", {"name": "string", "user": _USER}),
           "contexts": ("named", {"name": "string", "context": _CONTEXT}),
           "current-context": "string", "extensions": _EXTENSIONS}

_EXPECTED = {"string": "a string", "bool": "true or false", "bytes": "base64 text", "list": "a list",
             "named": "a list", "map": "a mapping"}


def _shape(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


class _Refusal(Exception):
    """Raised deep in the walk with the reason; `refusal` returns it."""


def _json_key(key: Any, where: str) -> str:
    """The JSON key sigs.k8s.io/yaml makes of a YAML key, or the refusal it ends in."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        if key >= 1 << 63:
            raise _Refusal(f"{where or 'the top level'} has the key {key}, which kubectl cannot read (it is larger "
                           "than a 64-bit integer)")
        return str(key)
    if isinstance(key, float):
        return repr(key)  # only compared with field names, which are never numbers
    raise _Refusal(f"{where or 'the top level'} has an empty (null) key, which kubectl cannot read")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_json(value: Any, where: str) -> None:
    """What the YAML-to-JSON step refuses anywhere, known field or not: null keys, .nan and .inf."""
    if isinstance(value, float) and not math.isfinite(value):
        word = ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
        raise _Refusal(f"{where or 'the file'} is {word}, which kubectl cannot read (JSON has no such number)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, _join(where, _json_key(key, where)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")


def _check(value: Any, schema: Any, where: str) -> None:
    """Go's JSON decoding into the v1 types: null fits anything, unknown fields are ignored."""
    if value is None or schema == "any":
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise _Refusal(f"{where} must be a mapping, not {_shape(value)}")
        fields = {_json_key(k, where): v for k, v in value.items()}
        for name, inner in schema.items():
            if name in fields:
                _check(fields[name], inner, _join(where, name))
        return
    if isinstance(schema, tuple):
        container, inner = schema
        if container == "map":
            if not isinstance(value, dict):
                raise _Refusal(f"{where} must be a mapping, not {_shape(value)}")
            for key, item in value.items():
                _check(item, inner, _join(where, _json_key(key, where)))
            return
        if not isinstance(value, list):
            raise _Refusal(f"{where} must be a list, not {_shape(value)}")
        for index, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            _check(item, inner, f"{where}[name={name}]" if isinstance(name, str) else f"{where}[{index}]")
        if container == "named":
            _check_unique_names(value, where)
        return
    if schema == "string" and isinstance(value, str):
        return
    if schema == "bool" and isinstance(value, bool):
        return
    if schema == "bytes":
        if isinstance(value, str):
            try:
                # Go's base64 decoding skips line breaks and wants the padding
                base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
                return
            except (binascii.Error, ValueError):
                raise _Refusal(f"{where} is not valid base64") from None
        if isinstance(value, list) and all(type(b) is int and 0 <= b <= 255 for b in value):
            return  # Go also takes a list of byte values
    hint = " (write it in quotes)" if schema == "string" and not isinstance(value, (dict, list)) else ""
    raise _Refusal(f"{where} must be {_EXPECTED[schema]}, not {_shape(value)}{hint}")


def _check_unique_names(items: List[Any], where: str) -> None:
    """client-go's conversion refuses a name defined twice; for extensions only when the first
    definition holds a value (a null extension leaves the name free)."""
    def name_of(item: Any) -> str:
        return (item.get("name") if isinstance(item, dict) else None) or ""

    parent, _, section = where.rpartition(".")
    taken: Dict[str, bool] = {}
    for item in items:
        name = name_of(item)
        if taken.get(name):
            count = sum(1 for other in items if name_of(other) == name)
            raise _Refusal(f"{count} {section} named {name!r}" + (f" in {parent}" if parent else "")
                           + " (kubectl refuses a name defined twice)")
        if section != "extensions" or (isinstance(item, dict) and item.get("extension") is not None):
            taken[name] = True


def refusal(data: Any) -> Optional[str]:
    """Why kubectl's loader would refuse `data` (a parsed kubeconfig file), or None when it loads it."""
    try:
        if not isinstance(data, dict):
            raise _Refusal(f"it holds {_shape(data)}, not a mapping of settings")
        _check_json(data, "")
        _check(data, _CONFIG, "")
        kind, version = data.get("kind") or "", data.get("apiVersion") or ""
        if kind not in ("", "Config") or version not in ("", "v1"):
            raise _Refusal(f"it is kind {kind or '(none)'!r}, apiVersion {version or '(none)'!r}; kubectl reads only "
                           "kind Config, apiVersion v1")
    except _Refusal as exc:
        return str(exc)
    return None
