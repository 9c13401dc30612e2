"""JSON merge patch (RFC 7396), JSON patch (RFC 6902) and ``${...}`` placeholders: the parts
of per-cluster overrides (``spec.workloads[].overrides[]`` with ``mergePatch`` / ``jsonPatch``
and ``${cluster.name}`` / ``${cluster.labels.<key>}``).

Pure.  Every function returns a new value and leaves its inputs untouched; every failure is a
``PatchError`` whose message names the operation and the path.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

OPS = ("add", "remove", "replace", "move", "copy", "test")
_PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z0-9._/-]+)\}")
_INDEX = re.compile(r"0|[1-9][0-9]*")  # used with fullmatch: "$" would accept a trailing "\n"
_BAD_ESCAPE = re.compile(r"~(?![01])")


class PatchError(ValueError):
    """A patch that cannot be applied; the message says which operation and why."""


# ----- RFC 7396 --------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the merge patch ``patch`` applied, as a new value sharing nothing with
    either input.  A non-object patch replaces the target; ``None`` members delete keys."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    base = target if isinstance(target, dict) else {}
    out: dict[str, Any] = {}
    for key, value in base.items():  # the target's keys first, in their order
        if key not in patch:
            out[key] = copy.deepcopy(value)
        elif patch[key] is not None:
            out[key] = merge_patch(value, patch[key])
    for key, value in patch.items():
        if key not in base and value is not None:
            out[key] = merge_patch(None, value)
    return out


# ----- RFC 6901 / 6902 ---------------------------------------------------------------------
def _tokens(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise PatchError(f"{pointer!r} is not a JSON pointer (it must be '' or start with '/')")
    if _BAD_ESCAPE.search(pointer):
        raise PatchError(f"{pointer!r} is not a JSON pointer ('~' must be followed by 0 or 1)")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _index(container: list[Any], token: str, *, insert: bool) -> int:
    if insert and token == "-":
        return len(container)
    if token == "-":
        raise PatchError("'-' (past the end of the array) can only be the target of add")
    if not _INDEX.fullmatch(token):
        raise PatchError(f"{token!r} is not an array index")
    index, size = int(token), len(container) + (1 if insert else 0)
    if index >= size:
        items = "item" if len(container) == 1 else "items"
        raise PatchError(f"index {index} is out of range (array has {len(container)} {items})")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    """The container the last token addresses into."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError("path does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, insert=False)]
        else:
            raise PatchError("path does not exist")
    return node


def _existing(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    """(container, key or index) of a value that must exist; tokens are not empty."""
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent, last
    if isinstance(parent, list):
        return parent, _index(parent, last, insert=False)
    raise PatchError("path does not exist")


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, key = _existing(doc, tokens)
    return parent[key]


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, insert=True), value)
    else:
        raise PatchError("path does not exist")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("the whole document cannot be removed")
    parent, key = _existing(doc, tokens)
    del parent[key]
    return doc


def _same(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _member(op: Mapping[str, Any], name: str) -> Any:
    if name not in op:
        raise PatchError(f"'{name}' is missing")
    return op[name]


def _one(doc: Any, op: Any) -> Any:
    if not isinstance(op, Mapping):
        raise PatchError("an operation must be an object")
    kind = op.get("op")
    if kind not in OPS:
        raise PatchError(f"'op' must be one of {', '.join(OPS)}")
    path = _tokens(_member(op, "path"))
    if kind == "add":
        return _add(doc, path, copy.deepcopy(_member(op, "value")))
    if kind == "remove":
        return _remove(doc, path)
    if kind == "replace":
        value = copy.deepcopy(_member(op, "value"))
        if not path:
            return value
        parent, key = _existing(doc, path)
        parent[key] = value  # in place: an object keeps its key order
        return doc
    if kind == "test":
        found, wanted = _get(doc, path), _member(op, "value")
        if not _same(found, wanted):
            raise PatchError(f"value is {_short(found)}, not {_short(wanted)}")
        return doc
    source = _tokens(_member(op, "from"))
    if kind == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, source)))
    value = _get(doc, source)  # moved, not duplicated: no copy needed
    if path == source:
        return doc
    if path[:len(source)] == source:
        raise PatchError(f"a value cannot be moved into itself (from {op['from']})")
    return _add(_remove(doc, source), path, value)


def _short(value: Any) -> str:
    """A value in JSON notation (``"a"``, ``true``, ``null``), cut to 60 characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """``doc`` with the JSON patch operations ``ops`` applied in order, as a new document;
    the inputs are left untouched.  Raises ``PatchError`` naming the failing operation."""
    out = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        try:
            out = _one(out, op)
        except PatchError as exc:
            what = (f" ({op.get('op')} {op.get('path')})"
                    if isinstance(op, Mapping) and op.get("op") in OPS and "path" in op else "")
            raise PatchError(f"operation {i}{what}: {exc}") from None
    return out


# ----- placeholders --------------------------------------------------------------------------
def substitute(value: Any, variables: Mapping[str, str], *, where: str) -> Any:
    """A copy of a JSON value with ``${name}`` in its strings replaced (``$${name}`` is a
    literal ``${name}``); an unknown name is an error ``where`` names the context of."""
    if isinstance(value, str):
        def one(m: re.Match[str]) -> str:
            if m.group(1):
                return "${" + m.group(2) + "}"
            if m.group(2) not in variables:
                raise PatchError(f"${{{m.group(2)}}} is not defined {where}")
            return variables[m.group(2)]
        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, dict):
        return {k: substitute(v, variables, where=where) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables, where=where) for v in value]
    return value
