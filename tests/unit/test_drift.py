"""Unit tests for hmls.domain.drift, replaying what a real kube-apiserver (v1.34.4) recorded.

Every ``managedFields`` fixture here was read back (``kubectl get --show-managed-fields``)
from spoke1 of ``hmls dev up``: the object was server-side applied with field manager
hmls-controller, then changed by the command named in the row.  Trimmed to what matters:

- the desired bodies are the manifests without hmls's owner labels and hash annotation, and
  the sets leave those keys out too (the ConfigMap keeps one owner label), except for the
  seed MLService, which is kept whole;
- a drifted hmls entry is written ``minus(APPLIED, path)``: the server's entry was the applied
  one with exactly that path gone (checked on the captures: nothing else changed), and
  ``minus`` drops what the server drops with it (a parent left without members);
- the other managers' entries are the captured ones, verbatim.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hmls.domain.drift import MAX_PATHS, Drift, Ownership, detect
from hmls.domain.models import Owner
from hmls.domain.render import materialize

HMLS = "hmls-controller"
Fields = dict[str, Any]


def entry(manager: str, fields: Fields, operation: str = "Update",
          subresource: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": "v1",
                           "time": "2026-12-02T17:20:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        out["subresource"] = subresource
    return out


def ours(fields: Fields) -> dict[str, Any]:
    return entry(HMLS, fields, "Apply")


def minus(fields: Fields, *path: str) -> Fields:
    """``fields`` without ``path``, serialized as the server does: a node left with only its
    "." marker becomes a leaf, a node left empty (not a member itself) goes too."""
    out = copy.deepcopy(fields)

    def drop(node: Fields, rest: tuple[str, ...]) -> None:
        head, *tail = rest
        if tail:
            drop(node[head], tuple(tail))
            child = node[head]
            if list(child) == ["."]:
                node[head] = {}
            elif not child:
                del node[head]
        else:
            del node[head]

    drop(out, path)
    return out


def drift_of(desired: dict[str, Any], managed_fields: list[dict[str, Any]]) -> Drift | None:
    return detect(desired, Ownership.of(managed_fields, HMLS))


# --- Deployment: replicas 2, a container with ports (protocol defaulted) and env ---------------

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web", "tier": "front"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "app", "image": "nginx:1.25",
                     "ports": [{"containerPort": 80}, {"containerPort": 9090, "name": "metrics"}],
                     "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                     "resources": {},
                     "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
                    {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "infinity"],
                     "env": []},
                ],
                "volumes": [{"name": "cache", "emptyDir": {}}],
            },
        },
    },
}
APP = 'k:{"name":"app"}'
SIDECAR = 'k:{"name":"sidecar"}'
PORT_9090 = 'k:{"containerPort":9090,"protocol":"TCP"}'
CONTAINERS = ("f:spec", "f:template", "f:spec", "f:containers")
DEPLOYMENT_APPLIED: Fields = {
    "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
    "f:spec": {
        "f:replicas": {},
        "f:selector": {},  # LabelSelector is an atomic struct: a leaf
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:containers": {
                    APP: {
                        ".": {},
                        "f:env": {
                            'k:{"name":"LEVEL"}': {".": {}, "f:name": {}, "f:value": {}},
                            'k:{"name":"MODE"}': {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {},
                        "f:name": {},
                        # protocol was left out: the server defaulted it into the key
                        "f:ports": {
                            'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}},
                            PORT_9090: {".": {}, "f:containerPort": {}, "f:name": {}}},
                        "f:resources": {},
                        "f:volumeMounts": {
                            'k:{"mountPath":"/cache"}': {".": {}, "f:mountPath": {}, "f:name": {}}}},
                    # args is atomic (a leaf); "env: []" is not recorded at all
                    SIDECAR: {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}},
                "f:volumes": {'k:{"name":"cache"}': {".": {}, "f:emptyDir": {}, "f:name": {}}}}}},
}

# a Deployment that leaves spec.replicas to an HPA
DEPLOYMENT_NO_REPLICAS: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web-hpa", "namespace": "demo"},
    "spec": {"selector": {"matchLabels": {"app": "web-hpa"}},
             "template": {"metadata": {"labels": {"app": "web-hpa"}},
                          "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}},
}
DEPLOYMENT_NO_REPLICAS_APPLIED: Fields = {"f:spec": {
    "f:selector": {},
    "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:containers": {APP: {".": {}, "f:image": {}, "f:name": {}}}}}}}

# --- Services: ports without protocol; and port 53 twice (TCP defaulted, UDP explicit) -----------

SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "websvc", "namespace": "demo"},
    "spec": {"selector": {"app": "web"},
             "ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 9090, "name": "metrics"}]},
}
PORT_80 = 'k:{"port":80,"protocol":"TCP"}'
SERVICE_APPLIED: Fields = {"f:spec": {
    "f:ports": {PORT_80: {".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}},
                'k:{"port":9090,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}},
    "f:selector": {}}}

DNS: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns", "namespace": "demo"},
    "spec": {"selector": {"app": "dns"},
             "ports": [{"port": 53, "name": "dns-tcp", "targetPort": 5353},
                       {"port": 53, "protocol": "UDP", "name": "dns", "targetPort": 5353}]},
}
DNS_TCP = 'k:{"port":53,"protocol":"TCP"}'
DNS_APPLIED: Fields = {"f:spec": {
    "f:ports": {DNS_TCP: {".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}},
                'k:{"port":53,"protocol":"UDP"}': {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {},
                                                  "f:targetPort": {}}},
    "f:selector": {}}}

# --- ConfigMap: labels, annotations, a finalizer (a set list), data ----------------------------

CONFIGMAP: dict[str, Any] = {
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "settings", "namespace": "demo",
                 "labels": {"app": "web", "hmls.tensorstack.dev/owner-name": "hmls-sample"},
                 "annotations": {"note": "hello"}, "finalizers": ["example.com/keep"]},
    "data": {"a": "1", "b": "two"},
}
CONFIGMAP_APPLIED: Fields = {
    "f:data": {"f:a": {}, "f:b": {}},
    "f:metadata": {"f:annotations": {"f:note": {}},
                   "f:finalizers": {'v:"example.com/keep"': {}},
                   "f:labels": {"f:app": {}, "f:hmls.tensorstack.dev/owner-name": {}}},
}

# --- the seed's three manifests (config/samples/hmls-sample.yaml) --------------------------------

RUNTIME: dict[str, Any] = {
    "apiVersion": "tensorstack.dev/v1beta1", "kind": "MLServiceRuntime",
    "metadata": {"name": "t9k-torchserve", "namespace": "demo"},
    "spec": {"enabled": True, "template": {"spec": {"containers": [{
        "name": "user-container", "image": "t9kpublic/pytorch-serve:0.4.1-cpu",
        "args": ["torchserve", "--start"], "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}},
}
# spec preserves unknown fields: its maps carry ".", its lists are atomic
RUNTIME_APPLIED: Fields = {"f:spec": {"f:enabled": {},
                                      "f:template": {".": {}, "f:spec": {".": {}, "f:containers": {}}}}}

SECRET: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Secret",
    "metadata": {"name": "s3-secret", "namespace": "demo", "labels": {"tensorstack.dev/resource": "s3"}},
    "type": "Opaque",
    "stringData": {".s3cfg": "host_base = example.s3.local\nuse_https = False\n"},
}
# the object has only data; hmls's Apply entry keeps what it sent: stringData
SECRET_APPLIED: Fields = {"f:metadata": {"f:labels": {"f:tensorstack.dev/resource": {}}},
                          "f:stringData": {"f:.s3cfg": {}}, "f:type": {}}

OWNER = Owner("demo", "hmls-sample", "0b4c6a3e-1111-2222-3333-444455556666")
SEED_MLSERVICE = materialize(OWNER, "spoke1", {
    "apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
    "metadata": {"name": "torch-mnist-s3", "namespace": "demo"},
    "spec": {"default": "origin", "releases": [{
        "name": "origin",
        "predictor": {"minReplicas": 1,
                      "model": {"runtime": "t9k-torchserve", "modelUri": "s3://models/mnist/"},
                      "storage": {"s3": {"secretRef": {"name": "s3-secret"}}}}}]},
}).body
HASH = "f:hmls.tensorstack.dev/applied-hash"
MLSERVICE_APPLIED: Fields = {  # whole, as captured: owner labels and hash annotation included
    "f:metadata": {"f:annotations": {HASH: {}},
                   "f:labels": {"f:hmls.tensorstack.dev/owner-name": {},
                                "f:hmls.tensorstack.dev/owner-namespace": {},
                                "f:hmls.tensorstack.dev/owner-uid": {}}},
    "f:spec": {"f:default": {}, "f:releases": {}},  # releases: atomic list (no list-type in the CRD)
}
SIMULATOR = entry("mlservice-simulator", {"f:status": {
    ".": {}, "f:address": {".": {}, "f:url": {}}, "f:conditions": {}, "f:defaultRelease": {},
    "f:releases": {}}}, subresource="status")

Row = tuple[str, dict[str, Any], list[dict[str, Any]], tuple[tuple[str, ...], tuple[str, ...]] | None]

ROWS: list[Row] = [
    # right after hmls's apply: never drift
    ("deployment_applied", DEPLOYMENT, [ours(DEPLOYMENT_APPLIED)], None),
    ("deployment_no_replicas_applied", DEPLOYMENT_NO_REPLICAS, [ours(DEPLOYMENT_NO_REPLICAS_APPLIED)], None),
    ("service_applied", SERVICE, [ours(SERVICE_APPLIED)], None),
    ("dns_applied", DNS, [ours(DNS_APPLIED)], None),
    ("configmap_applied", CONFIGMAP, [ours(CONFIGMAP_APPLIED)], None),
    ("runtime_applied", RUNTIME, [ours(RUNTIME_APPLIED)], None),
    ("secret_applied_with_stringData", SECRET, [ours(SECRET_APPLIED)], None),
    ("mlservice_applied", SEED_MLSERVICE, [ours(MLSERVICE_APPLIED), SIMULATOR], None),

    # kubectl patch --type=merge -p '{"spec":{"default":"canary"}}'
    ("mlservice_patched_default", SEED_MLSERVICE,
     [ours(minus(MLSERVICE_APPLIED, "f:spec", "f:default")), SIMULATOR,
      entry("kubectl-patch", {"f:spec": {"f:default": {}}})],
     (("spec.default",), ("kubectl-patch",))),
    # a merge patch inside releases replaces the whole (atomic) list
    ("mlservice_patched_releases", SEED_MLSERVICE,
     [ours(minus(MLSERVICE_APPLIED, "f:spec", "f:releases")), SIMULATOR,
      entry("kubectl-patch", {"f:spec": {"f:releases": {}}})],
     (("spec.releases",), ("kubectl-patch",))),
    # kubectl annotate --overwrite of the hash annotation (hmls's only annotation)
    ("mlservice_hash_annotated", SEED_MLSERVICE,
     [ours(minus(MLSERVICE_APPLIED, "f:metadata", "f:annotations", HASH)), SIMULATOR,
      entry("kubectl-annotate", {"f:metadata": {"f:annotations": {HASH: {}}}})],
     (('metadata.annotations["hmls.tensorstack.dev/applied-hash"]',), ("kubectl-annotate",))),

    # kubectl label --overwrite app=other
    ("configmap_labelled", CONFIGMAP,
     [ours(minus(CONFIGMAP_APPLIED, "f:metadata", "f:labels", "f:app")),
      entry("kubectl-label", {"f:metadata": {"f:labels": {"f:app": {}}}})],
     (("metadata.labels.app",), ("kubectl-label",))),
    # kubectl annotate --overwrite note=changed
    ("configmap_annotated", CONFIGMAP,
     [ours(minus(CONFIGMAP_APPLIED, "f:metadata", "f:annotations", "f:note")),
      entry("kubectl-annotate", {"f:metadata": {"f:annotations": {"f:note": {}}}})],
     (("metadata.annotations.note",), ("kubectl-annotate",))),
    # kubectl annotate --overwrite note=hello (the value hmls set): no change, no entry
    ("configmap_annotated_same_value", CONFIGMAP, [ours(CONFIGMAP_APPLIED)], None),
    # kubectl label app-: gone from every set
    ("configmap_label_removed", CONFIGMAP,
     [ours(minus(CONFIGMAP_APPLIED, "f:metadata", "f:labels", "f:app"))],
     (("metadata.labels.app",), ())),
    ("configmap_data_patched", CONFIGMAP,
     [ours(minus(CONFIGMAP_APPLIED, "f:data", "f:b")), entry("kubectl-patch", {"f:data": {"f:b": {}}})],
     (("data.b",), ("kubectl-patch",))),
    # another manager applies the SAME value without force: shared ownership
    ("configmap_shared_same_value", CONFIGMAP,
     [entry("other", {"f:data": {"f:a": {}}}, "Apply"), ours(CONFIGMAP_APPLIED)], None),
    # ... and a different value with --force-conflicts
    ("configmap_forced_by_other", CONFIGMAP,
     [ours(minus(CONFIGMAP_APPLIED, "f:data", "f:a")), entry("other", {"f:data": {"f:a": {}}}, "Apply")],
     (("data.a",), ("other",))),

    # kubectl scale --replicas=3: an Update of subresource scale owning the main resource's path
    ("deployment_scaled", DEPLOYMENT,
     [ours(minus(DEPLOYMENT_APPLIED, "f:spec", "f:replicas")),
      entry("kubectl", {"f:spec": {"f:replicas": {}}}, subresource="scale")],
     (("spec.replicas",), ("kubectl",))),
    # kubectl scale of a Deployment whose manifest has no replicas (HPA-style): the server
    # records nothing at all (nobody owned replicas), and it is no drift anyway
    ("deployment_no_replicas_scaled", DEPLOYMENT_NO_REPLICAS, [ours(DEPLOYMENT_NO_REPLICAS_APPLIED)], None),
    ("deployment_no_replicas_scaled_if_recorded", DEPLOYMENT_NO_REPLICAS,
     [ours(DEPLOYMENT_NO_REPLICAS_APPLIED),
      entry("kubectl", {"f:spec": {"f:replicas": {}}}, subresource="scale")],
     None),
    # kubectl patch (strategic) of the app container's image
    ("deployment_image_patched", DEPLOYMENT,
     [ours(minus(DEPLOYMENT_APPLIED, *CONTAINERS, APP, "f:image")),
      entry("kubectl-patch", {"f:spec": {"f:template": {"f:spec": {"f:containers": {
          APP: {"f:image": {}}}}}}})],
     (("spec.template.spec.containers[name=app].image",), ("kubectl-patch",))),
    # kubectl replace (what kubectl edit sends) with the sidecar's image changed
    ("deployment_replaced", DEPLOYMENT,
     [ours(minus(DEPLOYMENT_APPLIED, *CONTAINERS, SIDECAR, "f:image")),
      entry("kubectl-replace", {"f:spec": {"f:template": {"f:spec": {"f:containers": {
          SIDECAR: {"f:image": {}}}}}}})],
     (("spec.template.spec.containers[name=sidecar].image",), ("kubectl-replace",))),
    # kubectl set env -c app MODE=debug: hmls keeps the key field name
    ("deployment_set_env", DEPLOYMENT,
     [ours(minus(DEPLOYMENT_APPLIED, *CONTAINERS, APP, "f:env", 'k:{"name":"MODE"}', "f:value")),
      entry("kubectl-set", {"f:spec": {"f:template": {"f:spec": {"f:containers": {
          APP: {"f:env": {'k:{"name":"MODE"}': {"f:value": {}}}}}}}}})],
     (("spec.template.spec.containers[name=app].env[name=MODE].value",), ("kubectl-set",))),
    # JSON patch of the name of port 9090 (its protocol was defaulted into the key)
    ("deployment_port_renamed", DEPLOYMENT,
     [ours(minus(DEPLOYMENT_APPLIED, *CONTAINERS, APP, "f:ports", PORT_9090, "f:name")),
      entry("kubectl-patch", {"f:spec": {"f:template": {"f:spec": {"f:containers": {
          APP: {"f:ports": {PORT_9090: {"f:name": {}}}}}}}}})],
     (("spec.template.spec.containers[name=app].ports[containerPort=9090,protocol=TCP].name",),
      ("kubectl-patch",))),
    # JSON patch removing the sidecar container
    ("deployment_container_removed", DEPLOYMENT,
     [ours(minus(DEPLOYMENT_APPLIED, *CONTAINERS, SIDECAR))],
     (("spec.template.spec.containers[name=sidecar]",), ())),

    # another manager force-applies port 80's targetPort, giving the port without protocol
    ("service_forced_by_other", SERVICE,
     [ours(minus(SERVICE_APPLIED, "f:spec", "f:ports", PORT_80, "f:targetPort")),
      entry("other", {"f:spec": {"f:ports": {PORT_80: {".": {}, "f:port": {}, "f:targetPort": {}}}}},
            "Apply")],
     (("spec.ports[port=80,protocol=TCP].targetPort",), ("other",))),
    # hmls re-applies with force: back, the other manager keeps a share of the element
    ("service_reapplied", SERVICE,
     [ours(SERVICE_APPLIED),
      entry("other", {"f:spec": {"f:ports": {PORT_80: {".": {}, "f:port": {}}}}}, "Apply")],
     None),
    # another manager adds a UDP port 80 (a different element)
    ("service_other_udp_port", SERVICE,
     [ours(SERVICE_APPLIED), entry("other", {"f:spec": {"f:ports": {'k:{"port":80,"protocol":"UDP"}': {
         ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}}}, "Apply")],
     None),
    # port 53 without protocol must be matched with the TCP entry, not the UDP one
    ("dns_tcp_forced_by_other", DNS,
     [ours(minus(DNS_APPLIED, "f:spec", "f:ports", DNS_TCP, "f:targetPort")),
      entry("other", {"f:spec": {"f:ports": {DNS_TCP: {
          ".": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}}}, "Apply")],
     (("spec.ports[port=53,protocol=TCP].targetPort",), ("other",))),

    # the Secret's data patched behind a stringData manifest: invisible (module docstring)
    ("secret_data_patched", SECRET,
     [ours(SECRET_APPLIED), entry("kubectl-patch", {"f:data": {"f:.s3cfg": {}}})], None),
    ("secret_labelled", SECRET,
     [ours(minus(SECRET_APPLIED, "f:metadata", "f:labels", "f:tensorstack.dev/resource")),
      entry("kubectl-label", {"f:metadata": {"f:labels": {"f:tensorstack.dev/resource": {}}}}),
      entry("kubectl-patch", {"f:data": {"f:.s3cfg": {}}})],
     (('metadata.labels["tensorstack.dev/resource"]',), ("kubectl-label",))),

    # merge patch of the runtime's containers: hmls's spec node (a member, ".") stays as a leaf
    ("runtime_containers_patched", RUNTIME,
     [ours(minus(RUNTIME_APPLIED, "f:spec", "f:template", "f:spec", "f:containers")),
      entry("kubectl-patch", {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}})],
     (("spec.template.spec.containers",), ("kubectl-patch",))),
    ("runtime_enabled_patched", RUNTIME,
     [ours(minus(RUNTIME_APPLIED, "f:spec", "f:enabled")),
      entry("kubectl-patch", {"f:spec": {"f:enabled": {}}})],
     (("spec.enabled",), ("kubectl-patch",))),
]


@pytest.mark.parametrize(("desired", "managed_fields", "expected"),
                         [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_replayed_server_behaviour(desired: dict[str, Any], managed_fields: list[dict[str, Any]],
                                   expected: tuple[tuple[str, ...], tuple[str, ...]] | None) -> None:
    found = drift_of(desired, managed_fields)
    assert (None if found is None else (found.paths, found.managers)) == expected


def test_minus_reproduces_what_the_server_stored() -> None:
    # the two captured entries where a parent went with the removed field
    assert minus(RUNTIME_APPLIED, "f:spec", "f:template", "f:spec", "f:containers") == {
        "f:spec": {"f:enabled": {}, "f:template": {".": {}, "f:spec": {}}}}
    assert minus(MLSERVICE_APPLIED, "f:metadata", "f:annotations", HASH)["f:metadata"] == {
        "f:labels": MLSERVICE_APPLIED["f:metadata"]["f:labels"]}


def test_seed_mlservice_ownership_is_compact() -> None:
    own = Ownership.of([ours(MLSERVICE_APPLIED), SIMULATOR], HMLS)
    assert own.ours is not None and json.loads(own.ours) == MLSERVICE_APPLIED
    assert len(own.ours.encode()) == 251
    assert own.others == ()  # the status subresource is not kept


def test_str() -> None:
    found = drift_of(SEED_MLSERVICE, [ours(minus(MLSERVICE_APPLIED, "f:spec", "f:default")),
                                      entry("kubectl-patch", {"f:spec": {"f:default": {}}})])
    assert str(found) == "spec.default (now managed by kubectl-patch)"
    assert str(Drift(("metadata.labels.app",), ())) == "metadata.labels.app (removed)"
    assert str(Drift(("a", "b"), ("x", "y"))) == "a, b (now managed by x, y)"


def test_several_managers_and_paths() -> None:
    fields = minus(minus(CONFIGMAP_APPLIED, "f:data", "f:a"), "f:metadata", "f:labels", "f:app")
    found = drift_of(CONFIGMAP, [ours(fields), entry("zeta", {"f:metadata": {"f:labels": {"f:app": {}}}}),
                                 entry("alpha", {"f:data": {"f:a": {}}}, "Apply")])
    assert found == Drift(("metadata.labels.app", "data.a"), ("alpha", "zeta"))


# --- rules, on small synthetic sets ------------------------------------------------------------

def test_no_apply_entry_of_ours_is_drift_of_every_top_field() -> None:
    found = drift_of(CONFIGMAP, [entry(HMLS, CONFIGMAP_APPLIED)])  # an Update by hmls is not its apply
    assert found is not None and found.paths == ("metadata", "data")


def test_skipped_fields_and_none_values() -> None:
    desired = {"apiVersion": "v1", "kind": "ConfigMap", "status": {"x": 1},
               "metadata": {"name": "a", "namespace": "b", "uid": "u", "resourceVersion": "1",
                            "labels": None}, "data": {"a": "1", "b": None}}
    assert drift_of(desired, [ours({"f:data": {"f:a": {}}})]) is None
    assert drift_of({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}, []) is None


def test_empty_values_are_never_drift() -> None:
    desired = {"spec": {"ports": [], "extra": {}, "kept": 1}}
    assert drift_of(desired, [ours({"f:spec": {"f:kept": {}}})]) is None


def test_atomic_nodes_need_presence_only() -> None:
    desired = {"spec": {"selector": {"matchLabels": {"a": "b"}}, "args": ["x", "y"]}}
    assert drift_of(desired, [ours({"f:spec": {"f:selector": {}, "f:args": {}}})]) is None
    # shared atomic ownership (another manager applied the same value) is not a split
    assert drift_of(desired, [ours({"f:spec": {"f:selector": {}, "f:args": {}}}),
                              entry("o", {"f:spec": {"f:selector": {}, "f:args": {}}}, "Apply")]) is None
    found = drift_of(desired, [ours({"f:spec": {"f:selector": {}}}), entry("o", {"f:spec": {"f:args": {}}})])
    assert found == Drift(("spec.args",), ("o",))


def test_granular_map_taken_over_names_the_fields() -> None:
    desired = {"metadata": {"annotations": {"a": "1", "b": "2"}}}
    found = drift_of(desired, [ours({}), entry("o", {"f:metadata": {"f:annotations": {"f:b": {}}}})])
    # "a" is owned by nobody now, "b" by o: both are drift
    assert found == Drift(("metadata.annotations.a", "metadata.annotations.b"), ("o",))
    # without anyone holding it, the top-most missing node is reported
    assert drift_of(desired, [ours({"f:spec": {}})]) == Drift(("metadata",), ())


def test_set_list() -> None:
    desired = {"metadata": {"finalizers": ["a", "b"]}}
    assert drift_of(desired, [ours({"f:metadata": {"f:finalizers": {'v:"a"': {}, 'v:"b"': {}}}})]) is None
    found = drift_of(desired, [ours({"f:metadata": {"f:finalizers": {'v:"a"': {}, 'v:"c"': {}}}})])
    assert found == Drift(('metadata.finalizers["b"]',), ())


def test_positional_list_is_presence_only() -> None:
    desired = {"spec": {"items": ["a", {"x": 1}]}}
    assert drift_of(desired, [ours({"f:spec": {"f:items": {"i:0": {}, "i:1": {"f:x": {}}}}})]) is None
    assert drift_of(desired, [ours({"f:spec": {"f:items": {"i:0": {}}}})]) == Drift(("spec.items[x=1]",), ())


def test_unmatched_element_uses_the_key_fields_of_the_list() -> None:
    desired = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 81, "name": "alt"}]}}
    fields: Fields = {"f:spec": {"f:ports": {
        'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}}}}
    assert drift_of(desired, [ours(fields)]) == Drift(("spec.ports[port=81]",), ())


def test_key_values_compare_by_type() -> None:
    desired = {"spec": {"items": [{"id": 1, "v": "a"}]}}
    as_bool: Fields = {"f:spec": {"f:items": {'k:{"id":true}': {".": {}, "f:id": {}, "f:v": {}}}}}
    as_int: Fields = {"f:spec": {"f:items": {'k:{"id":1}': {".": {}, "f:id": {}, "f:v": {}}}}}
    assert drift_of(desired, [ours(as_int)]) is None
    assert drift_of(desired, [ours(as_bool)]) is not None


def test_paths_are_capped() -> None:
    desired = {"data": {f"k{i}": str(i) for i in range(3 * MAX_PATHS)}}
    found = drift_of(desired, [ours({"f:metadata": {}, "f:data": {"f:other": {}}})])
    assert found is not None and len(found.paths) == MAX_PATHS
    assert found.paths[0] == "data.k0"


def test_others_unparsable_are_ignored() -> None:
    own = Ownership('{"f:data":{"f:b":{}}}', (("bad", "{not json"), ("list", "[1]")))
    assert detect({"data": {"a": "1"}}, own) == Drift(("data.a",), ())
    assert detect({"data": {"a": "1"}}, Ownership("{broken", ())) == Drift(("data",), ())


# --- Ownership.of is tolerant ---------------------------------------------------------------------

@pytest.mark.parametrize("raw", [None, "x", 3, {"manager": HMLS}, [None, 1, "x", []],
                                 [{"manager": HMLS, "operation": "Apply", "fieldsV1": "nope"}],
                                 [{"manager": 5, "operation": "Apply", "fieldsV1": {}}],
                                 [{"operation": "Apply", "fieldsV1": {"f:a": {}}}]])
def test_ownership_of_malformed(raw: Any) -> None:
    assert Ownership.of(raw, HMLS) == Ownership(None, ())


def test_ownership_of_picks_entries() -> None:
    raw = [
        "junk",
        {"manager": HMLS, "operation": "Apply", "subresource": "status", "fieldsV1": {"f:status": {}}},
        {"manager": HMLS, "operation": "Update", "fieldsV1": {"f:x": {}}},
        {"manager": HMLS, "operation": "Apply", "fieldsV1": {"f:spec": {"f:a": {}}}},
        {"manager": "kcm", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}},
        {"manager": "kubectl", "operation": "Update", "subresource": "scale",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "empty", "operation": "Update", "fieldsV1": {}},
        {"manager": "nan", "operation": "Update", "fieldsV1": {"f:a": float("nan")}},
        {"manager": "odd", "operation": "Update", "fieldsV1": {"f:a": {1, 2}}},
    ]
    own = Ownership.of(raw, HMLS)
    assert own.ours == '{"f:spec":{"f:a":{}}}'
    assert own.others == (("kubectl", '{"f:spec":{"f:replicas":{}}}'), ("nan", '{"f:a":NaN}'))


def test_ownership_of_never_raises_on_cycles() -> None:
    node: dict[str, Any] = {}
    node["f:a"] = node
    own = Ownership.of([{"manager": HMLS, "operation": "Apply", "fieldsV1": node},
                        {"manager": "o", "operation": "Update", "fieldsV1": node}], HMLS)
    assert own == Ownership(None, ())
