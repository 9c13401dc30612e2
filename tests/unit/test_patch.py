"""JSON merge patch, JSON patch and placeholders (hmls.domain.patch)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmls.domain.patch import PatchError, json_patch, merge_patch, substitute

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=8)


# ----- merge patch ---------------------------------------------------------------------------
@pytest.mark.parametrize(("target", "patch", "result"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_follows_rfc_7396(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert merge_patch(target, patch) == result
    assert (target, patch) == before


@given(json_values, json_values)
def test_merge_patch_never_mutates_and_is_idempotent(target: Any, patch: Any) -> None:
    before = copy.deepcopy((target, patch))
    once = merge_patch(target, patch)
    assert (target, patch) == before
    assert merge_patch(once, patch) == once


# ----- JSON patch ----------------------------------------------------------------------------
DOC = {"spec": {"releases": [{"name": "a", "replicas": 1}], "default": "a"},
       "metadata": {"labels": {"x/y": "1", "m~n": "2"}}}


@pytest.mark.parametrize(("ops", "check"), [
    ([{"op": "add", "path": "/spec/canary", "value": "b"}], lambda d: d["spec"]["canary"] == "b"),
    ([{"op": "add", "path": "/spec/releases/-", "value": {"name": "b"}}],
     lambda d: [r["name"] for r in d["spec"]["releases"]] == ["a", "b"]),
    ([{"op": "add", "path": "/spec/releases/0", "value": {"name": "z"}}],
     lambda d: [r["name"] for r in d["spec"]["releases"]] == ["z", "a"]),
    ([{"op": "remove", "path": "/metadata/labels/x~1y"}],
     lambda d: d["metadata"]["labels"] == {"m~n": "2"}),
    ([{"op": "replace", "path": "/metadata/labels/m~0n", "value": "3"}],
     lambda d: d["metadata"]["labels"]["m~n"] == "3"),
    ([{"op": "replace", "path": "/spec/releases/0/replicas", "value": 3}],
     lambda d: d["spec"]["releases"][0]["replicas"] == 3),
    ([{"op": "move", "from": "/spec/default", "path": "/spec/primary"}],
     lambda d: d["spec"].get("primary") == "a" and "default" not in d["spec"]),
    ([{"op": "copy", "from": "/spec/releases/0", "path": "/spec/releases/-"}],
     lambda d: d["spec"]["releases"][0] == d["spec"]["releases"][1]),
    ([{"op": "test", "path": "/spec/default", "value": "a"},
      {"op": "replace", "path": "", "value": {"whole": True}}],
     lambda d: d == {"whole": True}),
])
def test_each_operation_applies(ops: list[Any], check: Any) -> None:
    before = copy.deepcopy(DOC)
    assert check(json_patch(DOC, ops))
    assert before == DOC


@pytest.mark.parametrize(("ops", "message"), [
    ([{"op": "remove", "path": "/spec/nope"}],
     "operation 0 (remove /spec/nope): path does not exist"),
    ([{"op": "add", "path": "/spec/default", "value": 1},
      {"op": "replace", "path": "/spec/releases/3/name", "value": "x"}],
     "operation 1 (replace /spec/releases/3/name): index 3 is out of range (array has 1 item)"),
    ([{"op": "add", "path": "/spec/releases/01", "value": 1}],
     "operation 0 (add /spec/releases/01): '01' is not an array index"),
    ([{"op": "test", "path": "/spec/default", "value": "b"}],
     'operation 0 (test /spec/default): value is "a", not "b"'),
    ([{"op": "test", "path": "/spec/releases/0/replicas", "value": True}],
     "operation 0 (test /spec/releases/0/replicas): value is 1, not True"),
    ([{"op": "frob", "path": "/a"}],
     "operation 0: 'op' must be one of add, remove, replace, move, copy, test"),
    ([{"op": "add", "value": 1}], "operation 0: 'path' is missing"),
    ([{"op": "add", "path": "/a"}], "operation 0 (add /a): 'value' is missing"),
    ([{"op": "copy", "path": "/a"}], "operation 0 (copy /a): 'from' is missing"),
    ([{"op": "move", "from": "/spec", "path": "/spec/inner"}],
     "operation 0 (move /spec/inner): a value cannot be moved into itself"),
    ([{"op": "add", "path": "spec", "value": 1}],
     "operation 0 (add spec): 'spec' is not a JSON pointer"),
    (["not an object"], "operation 0: an operation must be an object"),
    ([{"op": "add", "path": "/spec/default/x", "value": 1}],
     "operation 0 (add /spec/default/x): path does not exist"),
])
def test_a_failing_operation_says_which_and_why(ops: list[Any], message: str) -> None:
    with pytest.raises(PatchError) as caught:
        json_patch(DOC, ops)
    assert str(caught.value).startswith(message)


@given(st.dictionaries(st.text(max_size=4), json_values, max_size=4), json_values)
def test_add_then_remove_of_a_new_key_restores_the_document(doc: dict[str, Any],
                                                             value: Any) -> None:
    key = "new" + "".join(doc)  # longer than every key: not in doc
    pointer = "/" + key.replace("~", "~0").replace("/", "~1")
    added = json_patch(doc, [{"op": "add", "path": pointer, "value": value}])
    assert added[key] == value
    assert json_patch(added, [{"op": "remove", "path": pointer}]) == doc


# ----- placeholders --------------------------------------------------------------------------
def test_placeholders_are_replaced_in_string_values_only() -> None:
    value = {"${cluster.name}": ["s3://${cluster.labels.region}/m", 3, None],
             "where": "${cluster.name}-${cluster.name}", "literal": "$${cluster.name}"}
    out = substitute(value, {"cluster.name": "us1", "cluster.labels.region": "us"},
                     where="for cluster us1")
    assert out == {"${cluster.name}": ["s3://us/m", 3, None], "where": "us1-us1",
                   "literal": "${cluster.name}"}


def test_an_unknown_placeholder_is_named() -> None:
    with pytest.raises(PatchError, match=r"^\$\{cluster\.labels\.zone\} is not defined for "
                                         r"cluster eu1$"):
        substitute(["${cluster.labels.zone}"], {"cluster.name": "eu1"}, where="for cluster eu1")
