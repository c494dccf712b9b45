"""YAML as kubectl reads and writes it.

kubectl reads a kubeconfig with sigs.k8s.io/yaml: go-yaml v2 decodes it into untyped values (so an
unquoted `y` is true and `08` is a number), then JSON decoding fills client-go's v1.Config. PyYAML
follows YAML 1.1 differently (`1:20` is 80 to it, a bare `=` an error). This module reads with
go-yaml's rules, so that a stanza we do not touch means the same after we write the file back, and
writes every string quoted whenever either reader could take it for something else.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from kubectl_caas.errors import UsageError

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
        raise UsageError("a name or value for the kubeconfig is not valid text (it has a lone surrogate)",
                              "check the names you passed") from None
