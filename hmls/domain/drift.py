"""Drift of a spoke object, read from its ``metadata.managedFields``: no request, no copy.

Why this exists: skip-unchanged (``hmls.engine.reconciler``) must cost no request when
nothing drifted, yet a field someone changed behind hmls's back must be noticed within
seconds.  The applied-hash annotation only says what hmls last sent; the server's field
ownership says whether it still holds.  When another manager changes a field hmls applied
(kubectl patch/edit/label/annotate/scale are Update operations; another manager's
server-side apply with ``--force-conflicts``), ownership of that field leaves hmls's Apply
entry, or the field leaves every set when it is removed.  So a desired field that hmls's
own Apply entry no longer lists is drift; a field hmls never set (``spec.replicas`` left
to an HPA, ``status``) is never looked at.

Where it sits: the spoke informers keep one compact ``Ownership`` per watched object
(``Ownership.of(metadata.managedFields, FIELD_MANAGER)`` in ``hmls.engine.spokes``), not
the object; the reconciler calls ``detect(desired_body, ownership)`` when the watched
copy carries the desired hash, and a ``Drift`` makes it apply again with force (driftPolicy
Correct) or report ``str(drift)`` (driftPolicy Report).

The walk (each rule checked against kube-apiserver v1.34.4; the unit tests replay what it
recorded).  The invariant: right after hmls applied a body, ``detect`` of that body is None
whatever other managers own, else every reconcile would re-apply forever.

- Never recorded, so skipped: top-level ``apiVersion``/``kind`` (and ``status``, which an
  apply never sets), ``metadata.name``/``namespace`` and the other server-owned metadata.
- ``None`` values are skipped (the server records them, but there is nothing to keep).
- A dict descends through ``f:<key>``.  A node without children is atomic (a LabelSelector,
  an atomic map) and its presence is enough, unless another manager owns children at that
  path: then it was a granular map that lost them (custom resources with preserved unknown
  fields mark such maps with ``"."``, which stays when the children go).
- A list: no children in hmls's set means atomic, presence is enough.  ``k:{json}``
  (associative list): each desired element is matched with the entry whose key fields
  equal its values; a key field the element omits was defaulted by the server (a port's
  ``protocol: TCP`` shows up in the key) and matches anything.  ``v:<json>`` (set list):
  each scalar element must be listed.  ``i:<n>``: presence only.  ``"."`` is ignored.
- A missing empty list or dict (or one holding only None) is not drift: the server does not
  record empty associative lists (``env: []``), and there is nothing in it to own anyway.

Where the subset rule cannot be exact (documented, not guessed around):

- ``Secret.stringData``: the Apply entry keeps ``f:stringData`` while the object only has
  ``data``; a later change of ``data`` by someone else goes to their entry and hmls's entry
  is unchanged, so it is invisible here.  (Claiming drift whenever another manager owns the
  matching ``f:data`` key would loop: a forced apply of ``stringData`` never moves it back.)
- A granular map whose own node stays (``"."``) after every field hmls had in it was
  removed (not taken over) looks atomic; the removal is not seen.
- An empty desired list or dict is never checked (see above): another manager filling an
  empty atomic list hmls applied (``things: []`` in a custom resource) goes unseen.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_PATHS = 10
"""Reported paths per object; the walk stops there (one is enough to re-apply)."""

_TOP_SKIPPED = frozenset({"apiVersion", "kind", "status"})
_META_SKIPPED = frozenset({  # server-owned metadata: stripped from every managed field set
    "name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation",
    "selfLink", "managedFields", "clusterName", "deletionTimestamp", "deletionGracePeriodSeconds",
})
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")

FieldSet = Mapping[str, Any]
Step = tuple[str, Any]
"""One step of a path: ("f", name) | ("k", (desired element, label)) | ("v", value) | ("i", index)."""


def _compact(fields: Any) -> str | None:
    """Interned: the same manifest applied to many clusters (and CRs of one shape) leave the
    same field set everywhere, kept once."""
    try:
        return sys.intern(json.dumps(fields, separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class Ownership:
    """The field-ownership facts a cache keeps per spoke object (compact)."""

    ours: str | None
    """Compact JSON of hmls's Apply entry ``fieldsV1`` (the given manager, operation Apply,
    no subresource); None when the object has no such entry."""
    others: tuple[tuple[str, str], ...]
    """(manager, compact JSON ``fieldsV1``) of the other managers' non-empty entries.  Entries
    of the status subresource are left out (hmls never applies status); other subresources
    stay: ``kubectl scale`` is an Update of subresource ``scale`` owning ``f:spec.f:replicas``."""

    @classmethod
    def of(cls, managed_fields: Any, manager: str) -> Ownership:
        """From ``metadata.managedFields`` as sent; malformed entries are dropped, never raised."""
        ours: str | None = None
        others: list[tuple[str, str]] = []
        if not isinstance(managed_fields, list):
            return cls(None, ())
        for entry in managed_fields:
            if not isinstance(entry, dict):
                continue
            who, fields, sub = entry.get("manager"), entry.get("fieldsV1"), entry.get("subresource")
            if not isinstance(who, str) or not isinstance(fields, dict):
                continue
            if who == manager and entry.get("operation") == "Apply" and not sub:
                if ours is None:
                    ours = _compact(fields)
            elif who != manager and fields and sub != "status":
                text = _compact(fields)
                if text is not None:
                    others.append((who, text))
        return cls(ours, tuple(others))


@dataclass(frozen=True)
class Drift:
    """Desired fields hmls no longer owns on one object."""

    paths: tuple[str, ...]
    """Human paths, top-most only, at most ``MAX_PATHS``: ``spec.default``,
    ``metadata.labels.app``, ``spec.template.spec.containers[name=app].image``."""
    managers: tuple[str, ...]
    """Sorted managers that now own any of those paths; empty when the fields were removed."""

    def __str__(self) -> str:
        where = ", ".join(self.paths)
        if self.managers:
            return f"{where} (now managed by {', '.join(self.managers)})"
        return f"{where} (removed)"


def detect(desired: Mapping[str, Any], ownership: Ownership) -> Drift | None:
    """None when hmls's Apply entry still owns every field of ``desired``, else the drift."""
    ours = _load(ownership.ours) if ownership.ours is not None else {}
    walk = _Walk(_Others(ownership.others))
    top = {k: v for k, v in desired.items() if k not in _TOP_SKIPPED}
    meta = top.get("metadata")
    if isinstance(meta, Mapping):
        top["metadata"] = {k: v for k, v in meta.items() if k not in _META_SKIPPED}
    walk.value(top, ours, ())
    if not walk.missing:
        return None
    managers = sorted({who for who, fields in walk.others for steps in walk.missing
                       if _owns(fields, steps)})
    return Drift(tuple(_render(steps) for steps in walk.missing), tuple(managers))


def _load(text: str) -> dict[str, Any]:
    try:
        fields = json.loads(text)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _children(node: FieldSet) -> list[str]:
    return [k for k in node if k != "."]


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _keyed(node: FieldSet) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for k, sub in node.items():
        if isinstance(k, str) and k.startswith("k:"):
            try:
                key = json.loads(k[2:])
            except ValueError:
                continue
            if isinstance(key, dict):
                out.append((key, sub))
    return out


def _matches(element: Mapping[str, Any], key: Mapping[str, Any]) -> tuple[bool, bool]:
    """(matches, exactly): omitted key fields match (the server defaulted them)."""
    given = [name for name in key if element.get(name) is not None]
    ok = bool(given) and all(_same(element[name], key[name]) for name in given)
    return ok, ok and len(given) == len(key)


def _candidates(node: FieldSet, element: Mapping[str, Any],
                claimed: Sequence[Mapping[str, Any]] = ()) -> list[tuple[dict[str, Any], FieldSet]]:
    """(key, entry) of ``node`` that ``element`` may be: its exact match, else the entries
    matching the key fields it gives, less those another element of the list matches exactly
    (``claimed``: port 80 without protocol is not the entry of the UDP port 80 listed too)."""
    exact: list[tuple[dict[str, Any], FieldSet]] = []
    loose: list[tuple[dict[str, Any], FieldSet]] = []
    for key, sub in _keyed(node):
        ok, full = _matches(element, key)
        if ok and isinstance(sub, Mapping):
            (exact if full else loose).append((key, sub))
    return exact or [(key, sub) for key, sub in loose if key not in claimed]


def _set_values(node: FieldSet) -> list[Any]:
    out = []
    for k in node:
        if isinstance(k, str) and k.startswith("v:"):
            try:
                out.append(json.loads(k[2:]))
            except ValueError:
                continue
    return out


def _descend(node: FieldSet, step: Step) -> FieldSet | None:
    """The child of ``node`` at ``step``, matching as the walk does; None if absent."""
    kind, arg = step
    if kind == "f":
        child = node.get(f"f:{arg}")
    elif kind == "k":
        found = _candidates(node, arg[0])
        child = found[0][1] if found else None
    elif kind == "v":
        child = next((node[k] for k in node if isinstance(k, str) and k.startswith("v:")
                      and _loads_same(k[2:], arg)), None)
    else:
        child = node.get(f"i:{arg}")
    return child if isinstance(child, Mapping) else None


def _loads_same(text: str, value: Any) -> bool:
    try:
        return _same(json.loads(text), value)
    except ValueError:
        return False


def _at(fields: FieldSet, steps: Sequence[Step]) -> FieldSet | None:
    node: FieldSet | None = fields
    for step in steps:
        if node is None:
            return None
        node = _descend(node, step)
    return node


def _owns(fields: FieldSet, steps: Sequence[Step]) -> bool:
    """Whether a set holds the path, or an atomic (childless) node above it."""
    node: FieldSet = fields
    for step in steps:
        child = _descend(node, step)
        if child is None:
            return False
        if not _children(child):
            return True
        node = child
    return True


class _Others:
    """The other managers' sets, parsed on first use: most walks never need them."""

    def __init__(self, texts: tuple[tuple[str, str], ...]) -> None:
        self._texts = texts
        self._parsed: list[tuple[str, dict[str, Any]]] | None = None

    def parsed(self) -> list[tuple[str, dict[str, Any]]]:
        if self._parsed is None:
            self._parsed = [(who, fields) for who, text in self._texts if (fields := _load(text))]
        return self._parsed


class _Walk:
    """Collects the top-most desired paths missing from hmls's set, up to ``MAX_PATHS``."""

    def __init__(self, others: _Others) -> None:
        self._others = others
        self.missing: list[tuple[Step, ...]] = []

    @property
    def others(self) -> list[tuple[str, dict[str, Any]]]:
        return self._others.parsed()

    def _miss(self, steps: tuple[Step, ...]) -> None:
        if len(self.missing) < MAX_PATHS:
            self.missing.append(steps)

    def _split_elsewhere(self, steps: tuple[Step, ...]) -> bool:
        """Another manager owns children at a path hmls's set holds childless."""
        for _, fields in self.others:
            node = _at(fields, steps)
            if node is not None and _children(node):
                return True
        return False

    def value(self, value: Any, node: FieldSet, steps: tuple[Step, ...]) -> None:
        if len(self.missing) >= MAX_PATHS:
            return
        if isinstance(value, Mapping):
            self._map(value, node, steps)
        elif isinstance(value, list):
            self._list(value, node, steps)

    def _map(self, value: Mapping[str, Any], node: FieldSet, steps: tuple[Step, ...]) -> None:
        if not value or (steps and not _children(node) and not self._split_elsewhere(steps)):
            return  # atomic: owning the node is owning all of it
        for key, item in value.items():
            if item is None:
                continue
            here = (*steps, ("f", key))
            child = node.get(f"f:{key}")
            if isinstance(child, Mapping):
                self.value(item, child, here)
            elif _vacant(item):
                continue
            elif isinstance(item, Mapping | list) and self._split_elsewhere(here):
                self.value(item, {}, here)  # a granular map someone else has: name the fields
            else:
                self._miss(here)

    def _list(self, value: list[Any], node: FieldSet, steps: tuple[Step, ...]) -> None:
        if not value or (not _children(node) and not self._split_elsewhere(steps)):
            return  # atomic list
        keyed = _keyed(node)
        listed = _set_values(node)
        claimed = [key for key, _ in keyed if any(
            isinstance(e, Mapping) and _matches(e, key)[1] for e in value)] if keyed else []
        for index, element in enumerate(value):
            if element is None:
                continue
            if isinstance(element, Mapping):
                self._element(element, index, node, keyed, claimed, steps)
            elif listed and not isinstance(element, list) and not any(_same(element, v) for v in listed):
                self._miss((*steps, ("v", element)))  # a set list; by position (i:) presence is enough

    def _element(self, element: Mapping[str, Any], index: int, node: FieldSet,
                 keyed: list[tuple[dict[str, Any], Any]], claimed: list[dict[str, Any]],
                 steps: tuple[Step, ...]) -> None:
        found = _candidates(node, element, claimed)
        if not found:
            child = node.get(f"i:{index}")
            if not keyed and isinstance(child, Mapping):
                self.value(element, child, (*steps, ("i", index)))
            else:
                names = [name for key, _ in keyed for name in key]
                self._miss((*steps, ("k", (element, _selector(element, dict.fromkeys(names))))))
            return
        # the closest candidate decides (several only when the element omits a key field)
        best: list[tuple[Step, ...]] | None = None
        for key, sub in found:
            trial = _Walk(self._others)
            trial.value(element, sub, (*steps, ("k", (element, _selector(key, key)))))
            if best is None or len(trial.missing) < len(best):
                best = trial.missing
            if not best:
                return
        for missed in best or ():
            self._miss(missed)


def _vacant(value: Any) -> bool:
    """Nothing to own: None, or an empty list or dict (or one holding only such)."""
    if isinstance(value, Mapping):
        return all(_vacant(v) for v in value.values())
    if isinstance(value, list):
        return all(_vacant(v) for v in value)
    return value is None


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _render(steps: Sequence[Step]) -> str:
    out = ""
    for kind, arg in steps:
        if kind == "f":
            name = str(arg)
            if _PLAIN_KEY.match(name):
                out += f".{name}" if out else name
            else:
                out += f"[{json.dumps(name)}]"
        elif kind == "k":
            out += f"[{arg[1]}]"
        elif kind == "v":
            out += f"[{json.dumps(arg)}]"
        else:
            out += f"[{arg}]"
    return out


def _selector(values: Mapping[str, Any], names: Mapping[str, Any]) -> str:
    """``name=app`` or ``containerPort=80,protocol=TCP``: a list element by its key fields
    (``names``: those of hmls's entries in that list; ``name`` or a position-free summary
    when it has none)."""
    keys = [k for k in names if values.get(k) is not None] or [
        k for k in ("name",) if values.get(k) is not None]
    if not keys:
        keys = [k for k, v in values.items() if isinstance(v, str | int | float | bool)][:3]
    return ",".join(f"{k}={_scalar(values[k])}" for k in keys) or "?"
