"""Stand-ins for the heavier standard modules, for the get-token hit path.

kubectl runs get-token on every command, and a cache hit is over in about 20 ms, half of it the
interpreter starting. Three standard modules would each add a noticeable share: `json` (its
decoder, encoder and scanner modules, and `re` where nothing has loaded it yet: about a
millisecond), `hashlib` (OpenSSL's libcrypto: about 3 ms) and `re` itself. The hit path needs
little of them: read a cache entry and KUBERNETES_EXEC_INFO, write an ExecCredential, hash and
tidy a cache key. CPython's own accelerators (`_json`, `_sha256`/`_sha2`), which those modules use
underneath, do that directly; where one is missing (another Python), the standard module is used,
with the same results. tests/unit/test_hotpath.py checks they agree with the standard modules.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping, Union

_WHITESPACE = " \t\n\r"


class _Decoding:
    """What `_json.make_scanner` reads off the json package's JSONDecoder, with its defaults."""

    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
    strict = True


try:
    from _json import encode_basestring_ascii as _quote
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - not CPython
    _quote = _make_scanner = None


def loads(data: Union[str, bytes]) -> Any:
    """As json.loads for UTF-8 text: ValueError when it is not JSON (RecursionError when nested
    deeper than the parser goes, as json.loads)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if _make_scanner is None:  # pragma: no cover - not CPython
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _make_scanner(_Decoding())(text, start)
    except (StopIteration, SystemError):
        # StopIteration: no value starts there. SystemError: some CPython versions report the
        # other syntax errors through json.decoder, which is not loaded here.
        raise ValueError("not JSON") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError("extra data after the JSON value")
    return value


def quote(text: str) -> str:
    """A JSON string literal, as json.dumps writes it (ASCII only, escapes as it escapes)."""
    if _quote is None:  # pragma: no cover - not CPython
        import json

        return json.dumps(text)
    return _quote(text)


def dumps_flat(mapping: Mapping[str, Any], sort_keys: bool = False, compact: bool = False) -> str:
    """json.dumps of a mapping whose values are strings or such mappings (an ExecCredential, a cache
    key), with json.dumps' separators: ", " and ": ", or "," and ":" when compact."""
    items = sorted(mapping.items()) if sort_keys else mapping.items()
    comma, colon = (",", ":") if compact else (", ", ": ")
    parts = []
    for key, value in items:
        shown = dumps_flat(value, sort_keys, compact) if isinstance(value, dict) else quote(value)
        parts.append(f"{quote(key)}{colon}{shown}")
    return "{" + comma.join(parts) + "}"


def sha256(data: bytes) -> Any:
    """hashlib.sha256 without loading OpenSSL's libcrypto: CPython's built-in implementation."""
    try:
        from _sha256 import sha256 as new  # CPython 3.9-3.11
    except ImportError:
        try:
            from _sha2 import sha256 as new  # CPython 3.12+
        except ImportError:  # pragma: no cover - not CPython
            from hashlib import sha256 as new
    return new(data)


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@.+=-")


def only_safe(text: str) -> str:
    """Each run of characters other than ASCII letters, digits and @.+=- as one "_": what
    re.sub(r"[^A-Za-z0-9@.+=-]+", "_", text) gives, without loading `re`."""
    out = []
    in_run = False
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
            in_run = False
        elif not in_run:
            out.append("_")
            in_run = True
    return "".join(out)
