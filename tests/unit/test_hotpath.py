"""The hit path's stand-ins (hotpath.py) give exactly what the standard modules give: the same JSON
values and errors, the same JSON text (so cache file names stay what they were), the same digests
and the same tidied names."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubectl_caas import hotpath

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)
flat = st.recursive(st.text(), lambda inner: st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)


@given(json_values, st.sampled_from([None, 1, 2]))
def test_loads_reads_what_json_writes(value, indent):
    text = json.dumps(value, indent=indent)
    assert hotpath.loads(text) == json.loads(text)
    assert hotpath.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": 1', "[1, 2", '{"a": 1} x', "nul", "{'a': 1}", "\ufeff{}",
                                  '"unterminated', "[1,]"])
def test_loads_refuses_what_json_refuses(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        hotpath.loads(text)


def test_loads_of_deep_nesting_fails_as_json_does():
    deep = "[" * 100000 + "]" * 100000
    with pytest.raises(RecursionError):
        hotpath.loads(deep)


@given(flat.filter(lambda v: isinstance(v, dict)), st.booleans(), st.booleans())
def test_dumps_flat_writes_what_json_writes(mapping, sort_keys, compact):
    separators = (",", ":") if compact else (", ", ": ")
    assert hotpath.dumps_flat(mapping, sort_keys, compact) == json.dumps(mapping, sort_keys=sort_keys,
                                                                          separators=separators)


@given(st.binary())
def test_sha256_is_hashlibs(data):
    assert hotpath.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()


@given(st.text())
def test_only_safe_is_the_regular_expression_it_replaces(text):
    assert hotpath.only_safe(text) == re.sub(r"[^A-Za-z0-9@.+=-]+", "_", text)
