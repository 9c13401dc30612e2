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
     "operation 0 (test /spec/releases/0/replicas): value is 1, not true"),
    ([{"op": "test", "path": "/spec/releases/0", "value": {"name": "a", "replicas": None}}],
     'operation 0 (test /spec/releases/0): value is {"name":"a","replicas":1}, not '
     '{"name":"a","replicas":null}'),
    ([{"op": "remove", "path": "/spec/releases/1"}],
     "operation 0 (remove /spec/releases/1): index 1 is out of range (array has 1 item)"),
    ([{"op": "add", "path": "/spec/releases/2", "value": 1}],
     "operation 0 (add /spec/releases/2): index 2 is out of range (array has 1 item)"),
    ([{"op": "replace", "path": "/spec/releases/-", "value": 1}],
     "operation 0 (replace /spec/releases/-): '-' (past the end of the array) can only be"),
    ([{"op": "replace", "path": "/spec/releases/0\n", "value": 1}],
     "operation 0 (replace /spec/releases/0\n): '0\\n' is not an array index"),
    ([{"op": "add", "path": "/spec/releases/+1", "value": 1}],
     "operation 0 (add /spec/releases/+1): '+1' is not an array index"),
    ([{"op": "add", "path": "/metadata/labels/a~2", "value": 1}],
     "operation 0 (add /metadata/labels/a~2): '/metadata/labels/a~2' is not a JSON pointer "
     "('~' must be followed by 0 or 1)"),
    ([{"op": "replace", "path": "/spec/nope", "value": 1}],
     "operation 0 (replace /spec/nope): path does not exist"),
    ([{"op": "copy", "from": "/spec/nope", "path": "/spec/x"}],
     "operation 0 (copy /spec/x): path does not exist"),
    ([{"op": "move", "from": "", "path": "/x"}],
     "operation 0 (move /x): a value cannot be moved into itself"),
    ([{"op": "test", "path": "/spec/nope", "value": 1}],
     "operation 0 (test /spec/nope): path does not exist"),
    ([{"op": "remove", "path": ""}],
     "operation 0 (remove ): the whole document cannot be removed"),
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


def test_test_uses_json_equality() -> None:
    doc = {"n": 1, "f": 1.0, "b": True, "z": 0, "l": [1, {"k": False}]}
    ok = [{"op": "test", "path": "/n", "value": 1.0}, {"op": "test", "path": "/f", "value": 1},
          {"op": "test", "path": "/b", "value": True},
          {"op": "test", "path": "/l", "value": [1.0, {"k": False}]}]
    assert json_patch(doc, ok) == doc
    for path, value in [("/n", True), ("/b", 1), ("/z", False), ("/l", [True, {"k": False}]),
                        ("/l", [1, {"k": 0}]), ("/n", "1"), ("/l", [1])]:
        with pytest.raises(PatchError, match="value is"):
            json_patch(doc, [{"op": "test", "path": path, "value": value}])


def test_pointer_escapes_and_edge_tokens() -> None:
    doc: dict[str, Any] = {"a/b": {"c~d": 1}, "": {"": 2}, "~1": 3, " ": 4}
    assert json_patch(doc, [{"op": "test", "path": "/a~1b/c~0d", "value": 1},
                            {"op": "test", "path": "/", "value": {"": 2}},
                            {"op": "test", "path": "//", "value": 2},
                            {"op": "test", "path": "/~01", "value": 3},
                            {"op": "test", "path": "/ ", "value": 4}]) == doc
    out = json_patch(doc, [{"op": "add", "path": "/x~1y~0z", "value": 5}])
    assert out["x/y~z"] == 5


def test_replace_keeps_key_order_and_move_keeps_arrays_straight() -> None:
    doc = {"x": 1, "y": 2, "z": 3}
    assert list(json_patch(doc, [{"op": "replace", "path": "/x", "value": 9}])) == ["x", "y", "z"]
    # move evaluates "path" after the removal (RFC 6902 4.4)
    assert json_patch({"a": [1, 2, 3]}, [{"op": "move", "from": "/a/0", "path": "/a/2"}]) == {
        "a": [2, 3, 1]}
    assert json_patch({"a": [1, 2]}, [{"op": "move", "from": "/a/0", "path": "/a/0"}]) == {
        "a": [1, 2]}
    assert json_patch(doc, [{"op": "move", "from": "", "path": ""}]) == doc
    assert json_patch({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/ab"}]) == {
        "ab": {"b": 1}}


def test_results_share_nothing_with_the_inputs() -> None:
    target = {"keep": {"deep": [1]}, "merge": {"inner": {"v": 1}}}
    patch = {"merge": {"new": {"w": [2]}}, "added": {"x": [3]}}
    before = copy.deepcopy((target, patch))
    merged = merge_patch(target, patch)
    merged["keep"]["deep"].append(9)
    merged["merge"]["inner"]["v"] = 9
    merged["merge"]["new"]["w"].append(9)
    merged["added"]["x"].append(9)
    assert (target, patch) == before

    value = {"v": [1]}
    ops = [{"op": "add", "path": "/a", "value": value}, {"op": "copy", "from": "/a", "path": "/b"},
           {"op": "replace", "path": "/c", "value": value}]
    doc = {"c": 0, "d": {"e": [1]}}
    before_ops = copy.deepcopy((doc, ops))
    out = json_patch(doc, ops)
    out["a"]["v"].append(9)
    out["c"]["v"].append(9)
    out["d"]["e"].append(9)
    assert out["b"] == {"v": [1]}
    assert (doc, ops) == before_ops


def test_a_failed_patch_leaves_the_document_alone() -> None:
    doc = {"a": [1]}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "add", "path": "/a/-", "value": 2},
                         {"op": "remove", "path": "/b"}])
    assert doc == {"a": [1]}


@given(json_values, json_values)
def test_merge_patch_of_objects_against_a_reference(target: Any, patch: Any) -> None:
    """Every patch key is deleted, replaced or merged; every other target key stays."""
    out = merge_patch(target, patch)
    if not isinstance(patch, dict):
        assert out == patch
        return
    base = target if isinstance(target, dict) else {}
    assert isinstance(out, dict)
    for key in set(base) | set(patch):
        if key not in patch:
            assert out[key] == base[key]
        elif patch[key] is None:
            assert key not in out
        else:
            assert out[key] == merge_patch(base.get(key), patch[key])


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


def test_placeholder_names_and_non_placeholders() -> None:
    variables = {"cluster.labels.topology.kubernetes.io/zone": "z1", "a_b-c": "v"}
    assert substitute("${cluster.labels.topology.kubernetes.io/zone}|${a_b-c}", variables,
                      where="") == "z1|v"
    # not placeholders: left as they are; a value is never expanded again
    assert substitute(["${}", "${a b}", "$a_b-c", "{a_b-c}", "$"], variables, where="") == [
        "${}", "${a b}", "$a_b-c", "{a_b-c}", "$"]
    assert substitute("${x}", {"x": "${x}"}, where="") == "${x}"
    assert substitute("$${nope} and $${a_b-c}", {}, where="") == "${nope} and ${a_b-c}"
    assert substitute([True, 1, 1.5, None], {}, where="") == [True, 1, 1.5, None]


def test_substitute_does_not_mutate() -> None:
    value = {"a": ["${x}"], "b": {"c": "${x}"}}
    before = copy.deepcopy(value)
    out = substitute(value, {"x": "1"}, where="")
    assert out == {"a": ["1"], "b": {"c": "1"}}
    assert value == before


def test_an_unknown_placeholder_is_named() -> None:
    with pytest.raises(PatchError, match=r"^\$\{cluster\.labels\.zone\} is not defined for "
                                         r"cluster eu1$"):
        substitute(["${cluster.labels.zone}"], {"cluster.name": "eu1"}, where="for cluster eu1")
