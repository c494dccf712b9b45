"""Read, merge and write kubeconfig files exactly as kubectl does.

Which file gets what (client-go tools/clientcmd loader.go and config.go, checked against kubectl):

- `--kubeconfig FILE` is the only file. Otherwise KUBECONFIG split on os.pathsep with exact
  duplicates dropped, taken literally (no `~` expansion; relative to the working directory); an
  empty item is never read. Without KUBECONFIG, ~/.kube/config.
- The merged view: for each cluster, user and context name the first file defining it wins; the
  current context is the first non-empty one.
- A stanza that exists is changed in the file that defines it. A new stanza, and a new non-empty
  current-context, go to the default file: the explicit file; the only KUBECONFIG item; else the
  first item that exists, else the last item. (Only clearing current-context looks for the file
  that sets it, and we never clear it.)
- The cluster is set as `kubectl config set-cluster NAME --server=URL` sets it: tls-server-name
  and insecure-skip-tls-verify are dropped, and embedded CA data replaces a CA file.

YAML, as kubectl reads it (sigs.k8s.io/yaml: go-yaml v2 into untyped values, then JSON decoded
into client-go's v1.Config):

- Plain scalars are typed by go-yaml v2's rules (`y`, `off` and `08` are a boolean, a boolean and
  a number; `1:20`, `=` and dates stay strings), so what we read means what kubectl reads and a
  stanza we do not touch keeps its meaning when the file is written back.
- Every string we write is quoted when go-yaml or PyYAML could read it as anything else.
- A file kubectl refuses to load (wrong types, duplicate names, another kind or apiVersion, .nan,
  null keys) is refused with its path and the reason, before anything is written.

Writing goes through symbolic links to the final file, atomically (temporary file beside it,
fsync, rename), mode 0600, while a flock is held on each directory involved, waiting at most
LOCK_TIMEOUT. Every other entry, unknown field and key order is kept; a stanza we change is
first copied out of any YAML anchor it shares.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from kubectl_caas import cache
from kubectl_caas.errors import UsageError

SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}

# Long enough for a slow disk or a busy machine, short enough that a lock held by a stuck process
# (or by another user's process on a shared directory) ends in a clear line instead of a hang.
LOCK_TIMEOUT = 30.0

LEFT_UNTOUCHED = "kubectl cannot load it either; fix or move the file (it was left untouched)"


class KubeconfigError(UsageError):
    pass


# ---------------------------------------------------------------------------------------------
# go-yaml v2's typing of plain scalars (resolve.go, v2.4), as kubectl decodes into interface{}

_GO_WORDS: Dict[str, Tuple[str, Any]] = {}
for _words, _meaning in (
    ("y Y yes Yes YES true True TRUE on On ON", ("bool", True)),
    ("n N no No NO false False FALSE off Off OFF", ("bool", False)),
    ("~ null Null NULL", ("null", None)),
    (".nan .NaN .NAN", ("float", math.nan)),
    (".inf .Inf .INF +.inf +.Inf +.INF", ("float", math.inf)),
    ("-.inf -.Inf -.INF", ("float", -math.inf)),
):
    for _word in _words.split():
        _GO_WORDS[_word] = _meaning
_GO_WORDS[""] = ("null", None)

# go-yaml's own float pattern, tried on the text with underscores removed
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# what Go's strconv.ParseFloat accepts of a text starting with "." (underscores only between digits)
_GO_DOT_FLOAT = re.compile(r"\.[0-9]+(_[0-9]+)*([eE][-+]?[0-9]+(_[0-9]+)*)?")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _go_uint(text: str, base: int) -> Optional[int]:
    """strconv.ParseUint(text, base, 64) for base 0 or 2, on text without underscores."""
    if not text:
        return None
    if base == 0:
        base = 10
        if text[0] == "0":
            prefix = text[1:2].lower()
            if len(text) >= 3 and prefix in ("b", "o", "x"):
                base, text = {"b": 2, "o": 8, "x": 16}[prefix], text[2:]
            else:
                base, text = 8, text[1:]
    allowed = _DIGITS[:base] + _DIGITS[10:base].upper()
    if any(ch not in allowed for ch in text):  # ASCII only: Python's int() would take other digits
        return None
    value = int(text, base) if text else 0
    return value if value < 1 << 64 else None


def _go_int(text: str, base: int) -> Optional[int]:
    """strconv.ParseInt(text, base, 64)."""
    negative = text[:1] == "-"
    magnitude = _go_uint(text[1:] if text[:1] in ("+", "-") else text, base)
    if magnitude is None:
        return None
    value = -magnitude if negative else magnitude
    return value if -(1 << 63) <= value < 1 << 63 else None


def _finite_float(text: str) -> Optional[float]:
    value = float(text.replace("_", ""))
    return None if math.isinf(value) else value  # Go reports overflow as an error: the text stays a string


def go_resolve(text: str) -> Tuple[str, Any]:
    """(kind, value) go-yaml v2 gives an unquoted scalar: kind is str, bool, null, int or float.

    Timestamps are left out on purpose: decoded into interface{} they stay strings.
    """
    if text in _GO_WORDS:
        return _GO_WORDS[text]
    first = text[0]
    if first == ".":
        if _GO_DOT_FLOAT.fullmatch(text):
            number = _finite_float(text)
            if number is not None:
                return "float", number
    elif first in "+-0123456789":
        plain = text.replace("_", "")
        integer = _go_int(plain, 0)
        if integer is None:
            integer = _go_uint(plain, 0)
        if integer is not None:
            return "int", integer
        if _YAML_STYLE_FLOAT.fullmatch(plain):
            number = _finite_float(plain)
            if number is not None:
                return "float", number
        if plain.startswith("0b"):
            integer = _go_int(plain[2:], 2)
            if integer is None:
                integer = _go_uint(plain[2:], 2)
            if integer is not None:
                return "int", integer
        elif plain.startswith("-0b"):
            integer = _go_int("-" + plain[3:], 2)
            if integer is not None:
                return "int", integer
    return "str", text


def go_retypes(text: str) -> bool:
    """Would go-yaml read this text, written unquoted, as anything but this string? Errs on yes."""
    if text in _GO_WORDS or text == "<<":
        return True
    # Every number and timestamp go-yaml knows starts with a sign, a dot or a digit and has a digit.
    if text[0] in "+-.0123456789" and any(ch in "0123456789" for ch in text):
        return True
    return go_resolve(text)[0] != "str"


# ---------------------------------------------------------------------------------------------
# Reading: PyYAML's parser with go-yaml's typing, tabs and merge keys

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_KIND_TAGS = {"str": _TAG + "str", "bool": _TAG + "bool", "null": _TAG + "null", "int": _TAG + "int",
              "float": _TAG + "float"}


class _GoScanner(yaml.scanner.Scanner):
    """go-yaml takes tabs between tokens where it cannot start one, and between words of a plain scalar."""

    def scan_to_next_token(self) -> None:
        if self.index == 0 and self.peek() == "\uFEFF":
            self.forward()
        while True:
            while self.peek() == " " or (self.peek() == "\t" and (self.flow_level or not self.allow_simple_key)):
                self.forward()
            if self.peek() == "#":
                while self.peek() not in "\0\r\n\x85\u2028\u2029":
                    self.forward()
            if not self.scan_line_break():
                return
            if not self.flow_level:
                self.allow_simple_key = True

    def scan_plain_spaces(self, indent: int, start_mark: Any) -> List[str]:
        length = 0
        while self.peek(length) in " \t":
            length += 1
        blanks = self.prefix(length)
        if "\t" in blanks and self.peek(length) not in "\0\r\n\x85\u2028\u2029#":
            self.forward(length)
            return [blanks]
        return super().scan_plain_spaces(indent, start_mark)


class _GoResolver(yaml.resolver.BaseResolver):
    def resolve(self, kind: Any, value: Any, implicit: Tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            if value == "<<":  # a merge key; as a value go-yaml keeps the string
                return _MERGE
            return _KIND_TAGS[go_resolve(value)[0]]
        return super().resolve(kind, value, implicit)


class _GoConstructor(SafeConstructor):
    def construct_go_scalar(self, node: ScalarNode) -> Any:
        """Explicitly tagged or implicitly typed scalars: go-yaml's value, or its refusal."""
        kind, value = go_resolve(node.value)
        wanted = next(k for k, tag in _KIND_TAGS.items() if tag == node.tag)
        if kind == wanted:
            return value
        if wanted == "float" and kind == "int":
            return float(value)
        raise ConstructorError(None, None, f"cannot read {node.value!r} as {node.tag}", node.start_mark)

    def construct_text(self, node: ScalarNode) -> str:
        return node.value

    def construct_binary_as_text(self, node: ScalarNode) -> str:
        try:
            data = base64.b64decode("".join(node.value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ConstructorError(None, None, "!!binary value is not valid base64", node.start_mark) from None
        return data.decode("utf-8", "replace")

    def construct_by_node_kind(self, node: Any) -> Any:
        """Any other tag: go-yaml ignores it and decodes the node by its shape."""
        if isinstance(node, MappingNode):
            return self.construct_go_mapping(node)
        if isinstance(node, SequenceNode):
            return self.construct_yaml_seq(node)
        return node.value

    def _go_pairs(self, node: MappingNode, depth: int = 0) -> List[Tuple[Any, Any]]:
        """The (key, value) nodes in go-yaml's order of assignment: a merge key applies where it
        stands (later keys override it, earlier ones are overridden), a list of merges last first."""
        if depth > 100:
            raise ConstructorError(None, None, "merge keys nest too deep", node.start_mark)
        pairs: List[Tuple[Any, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                pairs.append((key_node, value_node))
                continue
            merged = list(reversed(value_node.value)) if isinstance(value_node, SequenceNode) else [value_node]
            for source in merged:
                if not isinstance(source, MappingNode):
                    raise ConstructorError(None, None, "map merge requires map or sequence of maps as the value",
                                           value_node.start_mark)
                pairs.extend(self._go_pairs(source, depth + 1))
        return pairs

    def construct_go_mapping(self, node: MappingNode) -> Iterator[Dict[Any, Any]]:
        data: Dict[Any, Any] = {}
        yield data
        for key_node, value_node in self._go_pairs(node):
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConstructorError(None, None, "a mapping or list cannot be a key", key_node.start_mark) from None
            data[key] = self.construct_object(value_node, deep=False)  # later keys win, as in go-yaml


for _kind, _tag in _KIND_TAGS.items():
    if _kind != "str":
        _GoConstructor.add_constructor(_tag, _GoConstructor.construct_go_scalar)
_GoConstructor.add_constructor(_TAG + "timestamp", _GoConstructor.construct_text)
_GoConstructor.add_constructor(_MERGE, _GoConstructor.construct_text)
_GoConstructor.add_constructor(_TAG + "binary", _GoConstructor.construct_binary_as_text)
_GoConstructor.add_constructor(_TAG + "map", _GoConstructor.construct_go_mapping)
for _tag in ("set", "omap", "pairs"):
    _GoConstructor.add_constructor(_TAG + _tag, _GoConstructor.construct_by_node_kind)
_GoConstructor.add_constructor(None, _GoConstructor.construct_by_node_kind)


class GoYamlLoader(yaml.reader.Reader, _GoScanner, yaml.parser.Parser, yaml.composer.Composer, _GoConstructor,
                   _GoResolver):
    def __init__(self, stream: Any) -> None:
        yaml.reader.Reader.__init__(self, stream)
        _GoScanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _GoConstructor.__init__(self)
        _GoResolver.__init__(self)
        self.alias_edges: Set[Tuple[int, int, bool]] = set()

    def compose_node(self, parent: Any, index: Any) -> Any:
        # PyYAML hands back the anchored node itself for an alias; remember where aliases stood
        # (parent, position, is it a key) to count alias expansions as go-yaml does.
        if parent is not None and self.check_event(yaml.events.AliasEvent):
            is_key = isinstance(parent, MappingNode) and index is None
            self.alias_edges.add((id(parent), len(parent.value), is_key))
        return super().compose_node(parent, index)


def _allowed_alias_ratio(decoded: int) -> float:
    low, high = 400_000, 4_000_000
    if decoded <= low:
        return 0.99
    if decoded >= high:
        return 0.10
    return 0.99 - 0.89 * (decoded - low) / (high - low)


def _refuse_what_go_yaml_refuses_in_aliases(root: Any, alias_edges: Set[Tuple[int, int, bool]]) -> None:
    """go-yaml's decode.go refuses an anchor that contains itself and alias bombs ("excessive
    aliasing"); counting as it does also keeps us from expanding a bomb ourselves."""
    decoded = aliased = 0
    expanding: Set[int] = set()

    def count(node: Any, in_alias: bool) -> None:
        nonlocal decoded, aliased
        decoded += 1
        aliased += in_alias
        if aliased > 100 and decoded > 1000 and aliased / decoded > _allowed_alias_ratio(decoded):
            raise ConstructorError(None, None, "document contains excessive aliasing", node.start_mark)

    def visit(node: Any, in_alias: bool) -> None:
        count(node, in_alias)
        if isinstance(node, ScalarNode):
            return
        if isinstance(node, SequenceNode):
            children = [(child, (id(node), i, False)) for i, child in enumerate(node.value)]
        else:
            children = [(child, (id(node), i, child is pair[0])) for i, pair in enumerate(node.value) for child in pair]
        for child, edge in children:
            if edge not in alias_edges:
                visit(child, in_alias)
                continue
            count(child, in_alias)  # the alias node itself
            if id(child) in expanding:
                raise ConstructorError(None, None, "an anchor's value contains itself", child.start_mark)
            expanding.add(id(child))
            visit(child, True)
            expanding.discard(id(child))

    visit(root, False)


def parse(raw: bytes) -> Any:
    """The first YAML document as kubectl sees it (go-yaml reads only the first); None if empty."""
    loader = GoYamlLoader(raw)
    try:
        if not loader.check_node():
            return None
        root = loader.get_node()
        if loader.yaml_version not in (None, (1, 1)):  # go-yaml reads YAML 1.1 only
            raise yaml.parser.ParserError(None, None, "found incompatible YAML document (only %YAML 1.1 is read)",
                                          root.start_mark)
        _refuse_what_go_yaml_refuses_in_aliases(root, loader.alias_edges)
        return loader.construct_document(root)
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------------
# Writing: PyYAML's emitter, quoting whatever go-yaml or PyYAML would retype


class _GoRetypes:
    """An implicit-resolver pattern: matches (and so forces quotes on) strings go-yaml would retype."""

    @staticmethod
    def match(text: str) -> bool:
        return go_retypes(text)


class GoSafeDumper(yaml.SafeDumper):
    pass


# PyYAML's own implicit resolvers stay in place, so its readers get the same strings back too.
GoSafeDumper.add_implicit_resolver("tag:kubectl-caas:go-yaml-would-retype", _GoRetypes(), None)

# Line breaks, tabs, controls and the like: written in double quotes with escapes, which go-yaml
# and PyYAML read alike, rather than in PyYAML's folded single-quoted style.
_NEEDS_ESCAPES = re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def _represent_str(dumper: GoSafeDumper, text: str) -> Any:
    style = '"' if _NEEDS_ESCAPES.search(text) else None
    return dumper.represent_scalar(_TAG + "str", text, style=style)


GoSafeDumper.add_representer(str, _represent_str)


def dump(data: Any) -> bytes:
    text = yaml.dump(data, Dumper=GoSafeDumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=sys.maxsize)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise KubeconfigError("a name or value for the kubeconfig is not valid text (it has a lone surrogate)",
                              "check the names you passed") from None


# ---------------------------------------------------------------------------------------------
# What kubectl refuses to load: client-go's v1.Config and its conversion (types.go, conversion.go)

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
    pass


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


def validate(path: str, data: Any) -> None:
    """Refuse, naming the file, what kubectl's loader refuses; accept everything it accepts."""
    try:
        if not isinstance(data, dict):
            raise _Refusal(f"it holds {_shape(data)}, not a mapping of settings")
        _check_json(data, "")
        _check(data, _CONFIG, "")
        kind, version = data.get("kind") or "", data.get("apiVersion") or ""
        if kind not in ("", "Config") or version not in ("", "v1"):
            raise _Refusal(f"it is kind {kind or '(none)'!r}, apiVersion {version or '(none)'!r}; kubectl reads only "
                           "kind Config, apiVersion v1")
    except _Refusal as refusal:
        raise KubeconfigError(f"kubeconfig {path}: {refusal}", LEFT_UNTOUCHED) from None


# ---------------------------------------------------------------------------------------------
# Which files


def default_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".kube", "config")


def _absolute(path: str) -> str:
    # joined, not normalised: "link/.." must mean what the kernel (and kubectl) make of it
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _listed(explicit: Optional[str]) -> Tuple[List[str], bool]:
    """kubectl's list as written: (items, whether it is an explicit file). Empty items are kept:
    they take part in choosing the default file, though nothing is read from them."""
    if explicit:
        return [explicit], True
    env = os.environ.get("KUBECONFIG")
    if env:
        items: List[str] = []
        for item in env.split(os.pathsep):
            if item not in items:
                items.append(item)
        return items, False
    return [default_path()], False


def resolve_paths(explicit: Optional[str] = None) -> List[str]:
    """The files kubectl would read, in precedence order (absolute)."""
    return [_absolute(p) for p in _listed(explicit)[0] if p]


def default_file(explicit: Optional[str] = None) -> str:
    """Where kubectl puts a new stanza or a new current-context (PathOptions.GetDefaultFilename);
    "" when KUBECONFIG leaves it none (then kubectl fails too)."""
    items, is_explicit = _listed(explicit)
    if is_explicit or len(items) == 1:
        return _absolute(items[0]) if items[0] else ""
    for item in items:
        if item and os.path.exists(item):
            return _absolute(item)
    return _absolute(items[-1]) if items[-1] else ""


def _no_default_file() -> KubeconfigError:
    return KubeconfigError("KUBECONFIG gives no file to write to: none of its files exists and its last item is empty",
                           "remove the empty item from KUBECONFIG (kubectl fails here too) or create one of the files")


def _target(path: str) -> str:
    """The file actually read and written: a symlinked kubeconfig is updated through the link."""
    return os.path.realpath(path)


# ---------------------------------------------------------------------------------------------
# Loading and merging


@dataclass
class KubeconfigFile:
    path: str  # as the list names it
    data: Dict[str, Any]
    exists: bool
    changed: bool = False
    target: str = ""  # after symlinks

    def find(self, section: str, name: str) -> Optional[int]:
        """Index of the stanza with this name (kubectl refuses duplicates, so there is one at most)."""
        for index, item in enumerate(self.data.get(section) or []):
            if ((item if isinstance(item, dict) else {}).get("name") or "") == name:
                return index
        return None


def _empty_config() -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [],
            "current-context": "", "preferences": {}, "users": []}


def load_file(path: str) -> KubeconfigFile:
    """Load and check one file; a missing file is an empty config that does not exist yet."""
    target = _target(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return KubeconfigFile(path, _empty_config(), exists=False, target=target)
    except IsADirectoryError:
        raise KubeconfigError(f"kubeconfig {path} is a directory", "point KUBECONFIG or --kubeconfig at a file") from None
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}",
                              "fix its permissions or remove it from KUBECONFIG") from None
    try:
        data = parse(raw)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        elif isinstance(exc, yaml.reader.ReaderError):
            where = f" at byte {exc.position}"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML{where}" + (f": {problem}" if problem else ""),
                              LEFT_UNTOUCHED) from None
    except RecursionError:
        raise KubeconfigError(f"kubeconfig {path} nests too deep to read", LEFT_UNTOUCHED) from None
    if data is None:
        data = _empty_config()
    validate(path, data)
    return KubeconfigFile(path, data, exists=True, target=target)


@dataclass
class Merged:
    """What kubectl sees: for each name the first definition wins."""

    files: List[KubeconfigFile]
    current_context: str = ""
    stanzas: Dict[str, Dict[str, Tuple[KubeconfigFile, Dict[str, Any]]]] = field(default_factory=dict)

    def get(self, section: str, name: str) -> Optional[Dict[str, Any]]:
        found = self.stanzas.get(section, {}).get(name)
        return found[1] if found else None

    def owner(self, section: str, name: str) -> Optional[KubeconfigFile]:
        found = self.stanzas.get(section, {}).get(name)
        return found[0] if found else None

    def names(self, section: str) -> List[str]:
        return list(self.stanzas.get(section, {}))

    def file(self, path: str) -> KubeconfigFile:
        """The loaded file behind a path of the list (two paths may lead to one file)."""
        target = _target(path)
        return next(f for f in self.files if f.target == target)


def load(paths: Sequence[str]) -> Merged:
    files: List[KubeconfigFile] = []
    for path in paths:
        if path and not any(f.target == _target(path) for f in files):  # a file listed twice merges as once
            files.append(load_file(path))
    merged = Merged(files)
    for section in SECTIONS:
        seen: Dict[str, Tuple[KubeconfigFile, Dict[str, Any]]] = {}
        for kfile in files:
            for item in kfile.data.get(section) or []:
                item = item if isinstance(item, dict) else {}
                seen.setdefault(item.get("name") or "", (kfile, item))
        merged.stanzas[section] = seen
    for kfile in files:
        if kfile.data.get("current-context"):
            merged.current_context = kfile.data["current-context"]
            break
    return merged


# ---------------------------------------------------------------------------------------------
# Locking


@contextlib.contextmanager
def locked(paths: Sequence[str], timeout: Optional[float] = None) -> Iterator[None]:
    """Hold an exclusive lock on each directory that holds one of the files (after symlinks).

    flock() on the directory itself: no lock file is left beside the kubeconfig, kubectl's own
    `<file>.lock` convention is untouched, and the kernel releases it if we are killed.
    Directories are locked in sorted order so that two writers never deadlock.
    """
    wait = LOCK_TIMEOUT if timeout is None else timeout
    directories = sorted({os.path.dirname(_target(p)) for p in paths if p})
    fds: List[int] = []
    try:
        for directory in directories:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd = os.open(directory, os.O_RDONLY)
            except OSError as exc:
                raise KubeconfigError(f"cannot use the kubeconfig directory {directory}: {exc.strerror}",
                                      "check that it exists and is writable") from None
            fds.append(fd)
            if not cache.flock_within(fd, wait):
                raise KubeconfigError(f"the kubeconfig directory {directory} stayed locked by another process for "
                                      f"{wait:g} s", "wait for the other kubectl-caas command to finish, then retry")
        yield
    finally:
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Login's entry


@dataclass
class Entry:
    """One login's worth of kubeconfig: a cluster, a user and a context tying them together."""

    context: str
    cluster: str
    server: str
    user: str
    user_body: Dict[str, Any]
    namespace: Optional[str] = None
    certificate_authority_data: Optional[str] = None


class ContextConflict(UsageError):
    pass


def context_points_elsewhere(merged: Merged, entry: Entry,
                             same_user: Callable[[Dict[str, Any]], bool]) -> Optional[str]:
    """Why the existing context of this name is not ours to overwrite, or None."""
    existing = merged.get("contexts", entry.context)
    if existing is None:
        return None
    body = existing.get("context") or {}
    cluster = merged.get("clusters", body.get("cluster") or "") or {}
    server = (cluster.get("cluster") or {}).get("server")
    if server and server.rstrip("/") != entry.server.rstrip("/"):
        return f"it points at server {server}"
    user = merged.get("users", body.get("user") or "")
    if user is not None and not same_user(user.get("user") or {}):
        return f"it uses another user ({body.get('user')})"
    return None


def refuse_conflict(merged: Merged, entry: Entry, same_user: Callable[[Dict[str, Any]], bool]) -> None:
    reason = context_points_elsewhere(merged, entry, same_user)
    if reason:
        raise ContextConflict(f"context {entry.context!r} already exists and {reason}",
                              "pass --force to overwrite it, or --context NAME to use another name")


def check_before_login(context: Optional[str], server: str, same_user: Callable[[Dict[str, Any]], bool],
                       explicit_path: Optional[str] = None, force: bool = False) -> None:
    """Before a login talks to anyone, refuse now what `upsert` would refuse later: a kubeconfig
    kubectl cannot load, a KUBECONFIG with no file to write to, or (without force) a context of
    this name that points elsewhere."""
    merged = load(resolve_paths(explicit_path))
    if not default_file(explicit_path):
        raise _no_default_file()
    if context and not force:
        refuse_conflict(merged, Entry(context=context, cluster="", server=server, user="", user_body={}), same_user)


def _own_copy(kfile: KubeconfigFile, section: str, name: str) -> Dict[str, Any]:
    """The stanza to change, created if missing, copied out of any YAML anchor it shares: an
    alias elsewhere in the file must keep meaning what it meant."""
    inner = SECTIONS[section]
    items = list(kfile.data.get(section) or [])
    index = kfile.find(section, name)
    if index is None:
        item: Dict[str, Any] = {"name": name}
        items.append(item)
    else:
        found = items[index]
        item = dict(found) if isinstance(found, dict) else {"name": name}
        items[index] = item
    body = item.get(inner)
    item[inner] = dict(body) if isinstance(body, dict) else {}
    kfile.data[section] = items
    kfile.changed = True
    return item


def _check_round_trip(kfile: KubeconfigFile, payload: bytes) -> None:
    """What we are about to write must read back as what we meant; a bug here must not cost a file."""
    try:
        back = parse(payload)
    except yaml.YAMLError:
        back = None
    if back != kfile.data:
        raise KubeconfigError(f"kubectl-caas would have written {kfile.path} wrongly, so it was left untouched",
                              "report this: it is a bug in kubectl-caas")


def upsert(entry: Entry, *, explicit_path: Optional[str] = None, make_current: bool = True,
           force: bool = False, same_user: Optional[Callable[[Dict[str, Any]], bool]] = None) -> List[str]:
    """Add or update the entry's cluster, user and context; returns the files written."""
    paths = resolve_paths(explicit_path)
    same_user = same_user or (lambda body: body == entry.user_body)
    default_path_ = default_file(explicit_path)
    with locked(paths):
        merged = load(paths)
        if not force:
            refuse_conflict(merged, entry, same_user)

        def home(section: str, name: str) -> KubeconfigFile:
            owner = merged.owner(section, name)
            if owner is not None:
                return owner
            if not default_path_:
                raise _no_default_file()
            return merged.file(default_path_)

        # As `kubectl config set-cluster NAME --server=URL [--certificate-authority=F --embed-certs]`:
        # --server drops tls-server-name, set-cluster always turns insecure-skip-tls-verify off, and
        # embedded CA data replaces a CA file.
        cluster = _own_copy(home("clusters", entry.cluster), "clusters", entry.cluster)["cluster"]
        cluster["server"] = entry.server
        cluster.pop("tls-server-name", None)
        cluster.pop("insecure-skip-tls-verify", None)
        if entry.certificate_authority_data:
            cluster.pop("certificate-authority", None)
            cluster["certificate-authority-data"] = entry.certificate_authority_data

        user = _own_copy(home("users", entry.user), "users", entry.user)
        # The user stanza is ours: replace it whole, so no stale static token is left behind.
        user["user"] = copy.deepcopy(entry.user_body)

        context = _own_copy(home("contexts", entry.context), "contexts", entry.context)["context"]
        context["cluster"] = entry.cluster
        context["user"] = entry.user
        if entry.namespace:
            context["namespace"] = entry.namespace

        if make_current and merged.current_context != entry.context:
            if not default_path_:
                raise _no_default_file()
            holder = merged.file(default_path_)
            holder.data["current-context"] = entry.context
            holder.changed = True

        payloads = []
        for kfile in merged.files:
            if kfile.changed:
                validate(kfile.path, kfile.data)
                payload = dump(kfile.data)
                _check_round_trip(kfile, payload)
                payloads.append((kfile, payload))
        written = []
        for kfile, payload in payloads:
            try:
                cache.write_private_file_atomically(kfile.target, payload)
            except OSError as exc:
                raise KubeconfigError(f"cannot write kubeconfig {kfile.path}: {exc.strerror}",
                                      "check that its directory is writable") from None
            written.append(kfile.path)
        return written


# ---------------------------------------------------------------------------------------------
# Reading exec stanzas


def exec_user_body(command: str, args: Sequence[str], install_hint: Optional[str] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": command,
        "args": list(args),
        "env": None,
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": False,
    }
    if install_hint:
        body["installHint"] = install_hint
    return {"exec": body}


def exec_args(user_body: Dict[str, Any]) -> Optional[List[str]]:
    exec_ = user_body.get("exec") if isinstance(user_body, dict) else None
    if not isinstance(exec_, dict):
        return None
    args = exec_.get("args")
    return ["" if a is None else str(a) for a in args] if isinstance(args, list) else []


def exec_command(user_body: Dict[str, Any]) -> Optional[str]:
    exec_ = user_body.get("exec") if isinstance(user_body, dict) else None
    return exec_.get("command") if isinstance(exec_, dict) else None


def contexts_of_plugin(merged: Merged, plugin_command: str) -> List[Tuple[str, Dict[str, Any], List[str]]]:
    """(context name, context body, get-token args) for every context whose user runs this plugin."""
    found = []
    for name in merged.names("contexts"):
        body = (merged.get("contexts", name) or {}).get("context") or {}
        user = merged.get("users", body.get("user") or "") or {}
        command = exec_command(user.get("user") or {})
        if command and os.path.basename(str(command)) == plugin_command:
            args = exec_args(user.get("user") or {}) or []
            found.append((name, body, args))
    return found
