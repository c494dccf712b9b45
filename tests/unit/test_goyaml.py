"""The kubeconfig's YAML as kubectl (go-yaml v2) reads it: what we write reads back as the same
strings, and what we read is typed as kubectl types it. Real kubectl checks the same tables in
tests/integration/test_kubectl_oracle.py."""
from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubectl_caas import goyaml

# --- strategies: text biased towards what YAML 1.1 readers retype --------------------------------

BOOL_AND_NULL_WORDS = ["y", "yes", "n", "no", "on", "off", "true", "false", "null", "nan", "inf", "infinity"]
SPECIAL = ["", "~", "=", "<<", "-", "+", ".", ":", "?", "#", "!", "&a", "*a", "|", ">", "%", "@", "`", "'", '"',
           ".inf", "-.Inf", "+.INF", ".nan", ".NaN", "0x", "0b", "0o", "-0b1", "0b-1", "1:20", "190:20:30",
           "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10", "2002-12-14T21:59:43Z", "\ufeff",
           "\x85", "\u2028", "\u2029", "\x00", "\x7f", "\x1b[31m", "é", "ДЕВ", "名前", "😀", "a b", " a", "a ", "a\tb"]


def any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper)))


number_like = st.text(alphabet="0123456789+-._eExXoObBaAfF:", min_size=1, max_size=10)
timestamps = st.builds("{:04d}-{}-{}{}".format, st.integers(0, 9999), st.integers(1, 12), st.integers(1, 31),
                       st.sampled_from(["", "t1:2:3", "T21:59:43.10Z", " 21:59:43.10", "T21:59:43-05:00"]))
yaml_syntax = st.text(alphabet=" :#-?[]{},&*!|>'\"%@`\t\n\r\\.~=<+", max_size=8)
blanks = st.text(alphabet=" \t\n\r\x85\u2028\u2029\xa0\ufeff", max_size=3)
words = st.sampled_from(BOOL_AND_NULL_WORDS).flatmap(any_case)
pieces = st.one_of(st.sampled_from(SPECIAL), number_like, words, timestamps, yaml_syntax, st.text(max_size=12))
ambiguous_text = st.one_of(pieces, st.builds(lambda a, b, c: a + b + c, blanks, pieces, blanks),
                           st.builds(lambda a, b: a + b, pieces, pieces))


def config_with(strings: list) -> dict:
    """A kubeconfig holding each string as a name, a namespace, a server and an extension key and value."""
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": s, "cluster": {"server": s, "tls-server-name": s}} for s in strings],
        "users": [{"name": s, "user": {"exec": {"command": s, "args": [s], "env": [{"name": s, "value": s}]}}}
                  for s in strings],
        "contexts": [{"name": s, "context": {"cluster": s, "user": s, "namespace": s}} for s in strings],
        "current-context": strings[0] if strings else "",
        "extensions": [{"name": "e", "extension": {s: s for s in strings}}],
        "preferences": {"extensions": [{"name": s, "extension": [s]} for s in strings]},
    }


# --- what we write ------------------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ambiguous_text, max_size=12))
def test_every_string_we_write_reads_back_as_the_same_string(strings):
    data = config_with(strings)
    assert goyaml.parse(goyaml.dump(data)) == data


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ambiguous_text, max_size=12))
def test_every_string_we_write_reads_back_the_same_in_pyyaml_too(strings):
    data = config_with(strings)
    assert yaml.safe_load(goyaml.dump(data)) == data


@settings(max_examples=2000)
@given(ambiguous_text)
def test_the_quoting_rule_covers_everything_go_yaml_would_retype(text):
    if text and goyaml.go_resolve(text)[0] != "str":
        assert goyaml.go_retypes(text)


def scalar_styles(payload: bytes) -> dict:
    return {event.value: event.style for event in yaml.parse(payload) if isinstance(event, yaml.ScalarEvent)}


@settings(max_examples=1000)
@given(ambiguous_text)
def test_a_string_go_yaml_would_retype_is_written_in_quotes_as_key_and_as_value(text):
    styles = scalar_styles(goyaml.dump({"extension": {text: "v", "k": text}}))
    if goyaml.go_retypes(text):
        assert styles[text] in ("'", '"')


@pytest.mark.parametrize("text", ["n", "y", "Y", "N", "yes", "On", "OFF", "1e3", "0o17", "08", ".5", "1_000", "0x1F",
                                  "~", "null", "NULL", "", "<<", "=", "1:20", "2001-12-14", "-.inf", ".NaN", "0b-101",
                                  "1_e5", "+5", "-0"])
def test_known_troublemakers_are_quoted(text):
    assert scalar_styles(goyaml.dump({"namespace": text}))[text] in ("'", '"')


def test_ordinary_names_stay_unquoted():
    styles = scalar_styles(goyaml.dump({"name": "caas-example-6443", "user": "alice@cms", "ns": "cms"}))
    assert set(styles.values()) == {None}  # plain


# --- what we read -------------------------------------------------------------------------------

# (plain scalar, what kubectl 1.37's go-yaml v2 made of it), measured with `kubectl config view -o json`
GO_YAML_TYPING = [
    ("1_000", 1000), ("0b101", 5), ("0x1F", 31), ("017", 15), ("08", 8.0), ("+5", 5), ("-0b11", -3), (".5_0", 0.5),
    ("1e400", "1e400"), ("1_0.5", 10.5), ("0b-101", -5), ("1e3", 1000.0), ("1:20", "1:20"), ("0o17", 15),
    ("99999999999999999999", 1e20), ("9223372036854775808", 9223372036854775808), ("-9223372036854775809", -9.223372036854776e18),
    ("1__0", 10), ("0x_1F", 31), ("._5", "._5"), ("1.e5", 100000.0), ("+.5", 0.5), ("-.5e+3", -500.0), ("1e", "1e"),
    ("00", 0), ("09.5", 9.5), ("0.1e1_0", 1e9), ("+0x10", 16), ("-0o7", -7), ("0B1", 1), ("0X1f", 31), ("0O7", 7),
    (".5E-2", 0.005), ("+", "+"), ("1_", 1), (".1_", ".1_"), (".1__2", ".1__2"), (".1e_1", ".1e_1"), ("-0", 0),
    ("0x", "0x"), ("0b", "0b"), ("0b_1", 1), ("1.", 1.0), ("-.", "-."), (".e1", ".e1"), ("0.0.1", "0.0.1"),
    ("1e+", "1e+"), ("1_e5", 100000.0), ("0x1p3", "0x1p3"), (".5e5_0", 5e49), (".5_e5", ".5_e5"), ("+Inf", "+Inf"),
    ("NaN", "NaN"), (".infinity", ".infinity"), ("0b+1", 1), ("-0b-1", "-0b-1"), ("1e309", "1e309"), (".1e309", 1e308),
    ("0xFFFFFFFFFFFFFFFF", 18446744073709551615), ("-0x8000000000000000", -9223372036854775808), ("0_x1", 1),
    ("1e-400", 0.0), ("012_3", 83), ("0e", "0e"), ("00x1", "00x1"), ("y", True), ("N", False), ("off", False),
    ("TRUE", True), ("tRue", "tRue"), ("~", None), ("nUll", "nUll"), ("2001-12-14", "2001-12-14"),
    ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"), ("=", "="), ("<<", "<<"), ("٣", "٣"),
]


def same_value(got, wanted) -> bool:
    return type(got) is type(wanted) and (got == wanted or (isinstance(got, float) and math.isclose(got, wanted)))


@pytest.mark.parametrize("text, wanted", GO_YAML_TYPING)
def test_plain_scalars_are_typed_as_go_yaml_types_them(text, wanted):
    got = goyaml.parse(f"value: {text}\n".encode())["value"]
    assert same_value(got, wanted), (text, got, wanted)


def test_a_bare_equals_sign_kubectl_writes_is_read_as_a_string():
    assert goyaml.parse(b"current-context: =\nclusters:\n- name: =\n")["clusters"][0]["name"] == "="


def test_a_merge_key_applies_where_it_stands_as_in_go_yaml():
    data = goyaml.parse(b"base: &b {server: merged, x: 1}\n"
                            b"before: {server: own, <<: *b}\n"
                            b"after: {<<: *b, server: own}\n"
                            b"list: {<<: [{a: first}, {a: second}]}\n")
    assert data["before"]["server"] == "merged"  # go-yaml assigns in order; PyYAML would keep "own"
    assert data["after"]["server"] == "own"
    assert data["list"]["a"] == "first"


def test_only_the_first_document_counts_as_in_kubectl():
    assert goyaml.parse(b"current-context: a\n---\ncurrent-context: b\n") == {"current-context": "a"}


def test_tabs_go_yaml_allows_are_allowed():
    assert goyaml.parse(b"kind:\tConfig\nname: a\tb\n") == {"kind": "Config", "name": "a\tb"}


def test_unknown_tags_are_ignored_and_binary_is_decoded_as_go_yaml_does():
    data = goyaml.parse(b"a: !foo bar\nb: !!binary aGVsbG8=\nc: !!str 5\nd: !custom {x: 1}\n")
    assert data == {"a": "bar", "b": "hello", "c": "5", "d": {"x": 1}}


@settings(max_examples=500)
@given(ambiguous_text.filter(lambda t: t.strip() == t and "\n" not in t))
def test_a_value_read_from_someone_elses_file_keeps_its_meaning_when_written_back(text):
    try:
        data = goyaml.parse(f"value: {text}\n".encode())
    except yaml.YAMLError:
        return  # not a plain scalar at all
    if not isinstance(data, dict) or not isinstance(data.get("value"), (str, int, float, bool, type(None))):
        return
    value = data["value"]
    if isinstance(value, float) and not math.isfinite(value):
        return  # kubectl refuses these, so do we
    again = goyaml.parse(goyaml.dump(data))["value"]
    assert same_value(again, value) or (value is None and again is None)
