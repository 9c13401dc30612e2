"""Unit tests for hmls.domain.health: one table per kind, agreeing with kstatus.

Rows named in camelCase are the inputs of kstatus's own tests (cli-utils
pkg/kstatus/status/status_compute_test.go, core_test.go, status_augment_test.go), with
kstatus's verdict: ready is True exactly where kstatus says Current.  Rows in
snake_case are extra hmls cases for branches kstatus's tests do not reach.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmls.domain.health import Health, condition, health, spec_subset

Row = tuple[str, dict[str, Any], Health]


def obj(api_version: str, kind: str, *, generation: int | None = 1, spec: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind,
                           "metadata": {"name": "test", "namespace": "qual", **meta}}
    if generation is not None:
        out["metadata"]["generation"] = generation
    if spec is not None:
        out["spec"] = spec
    if status is not None:
        out["status"] = status
    return out


def cond(ctype: str, value: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    out = {"type": ctype, "status": value}
    if reason is not None:
        out["reason"] = reason
    if message is not None:
        out["message"] = message
    return out


def not_ready(reason: str) -> Health:
    return Health(False, reason)


READY = Health(True, "Ready")


def failed(reason: str) -> Health:
    """Not ready, and kstatus would say Failed."""
    return Health(False, reason, failed=True)


def rows(table: list[Row]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(("o", "want"), [pytest.param(o, w, id=name) for name, o, w in table])


# -- generic rules (every kind) --------------------------------------------------------------

def dep(**kw: Any) -> dict[str, Any]:
    return obj("apps/v1", "Deployment", **kw)


DEP_OK_STATUS: dict[str, Any] = {
    "observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
    "replicas": 1, "conditions": [cond("Progressing", "True", "NewReplicaSetAvailable"),
                                  cond("Available", "True")]}

GENERIC: list[Row] = [
    # status_compute_test.go TestCRDGenericStatus / TestDaemonsetStatus / TestPDBStatus
    ("crdMismatchStatusGeneration",
     obj("something/v1", "MyCR", generation=2, status={"observedGeneration": 1}),
     not_ready("status.observedGeneration 1 < metadata.generation 2")),
    ("dsDifferentGeneration", obj("apps/v1", "DaemonSet", generation=2, status={
        "desiredNumberScheduled": 4, "currentNumberScheduled": 4, "updatedNumberScheduled": 4,
        "numberAvailable": 4, "numberReady": 4, "observedGeneration": 1}),
     not_ready("status.observedGeneration 1 < metadata.generation 2")),
    ("pdbNotObserved", obj("policy/v1beta1", "PodDisruptionBudget", generation=2,
                           status={"observedGeneration": 1}),
     not_ready("status.observedGeneration 1 < metadata.generation 2")),
    # status_augment_test.go: a standard condition set by the controller decides alone
    ("already has condition of standard type InProgress",
     obj("v1", "Pod", status={"phase": "Running", "conditions": [
         cond("Reconciling", "True", "PodIsAbsolutelyNotReady")]}),
     not_ready("Reconciling: PodIsAbsolutelyNotReady")),
    ("already has condition of standard type Failed",
     obj("v1", "Pod", status={"phase": "Running", "conditions": [cond("Stalled", "True", "PodHasFailed")]}),
     failed("Stalled: PodHasFailed")),
    ("deletion_timestamp_wins_over_everything",
     dep(deletionTimestamp="2024-01-01T00:00:00Z", status=DEP_OK_STATUS), not_ready("terminating")),
    ("terminating_configmap", obj("v1", "ConfigMap", deletionTimestamp="2024-01-01T00:00:00Z"),
     not_ready("terminating")),
    ("empty_deletion_timestamp_is_not_terminating", dep(deletionTimestamp="", status=DEP_OK_STATUS), READY),
    ("observed_generation_ahead", dep(status={**DEP_OK_STATUS, "observedGeneration": 3}),
     not_ready("status.observedGeneration 3 > metadata.generation 1")),
    ("no_generation_skips_the_check", dep(generation=None, status={**DEP_OK_STATUS, "observedGeneration": 7}),
     READY),
    ("reconciling_on_a_ready_custom_resource",
     obj("example.com/v1", "Widget", status={"conditions": [
         cond("Ready", "True"), cond("Reconciling", "True", "Scaling", "2 of 3")]}),
     not_ready("Reconciling: 2 of 3")),
    ("stalled_on_a_ready_deployment",
     dep(status={**DEP_OK_STATUS, "conditions": [*DEP_OK_STATUS["conditions"], cond("Stalled", "True")]}),
     failed("Stalled")),
    ("reconciling_false_is_ignored",
     dep(status={**DEP_OK_STATUS, "conditions": [*DEP_OK_STATUS["conditions"], cond("Reconciling", "False"),
                                                 cond("Stalled", "Unknown")]}),
     READY),
]


@rows(GENERIC)
def test_generic_rules(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("status_not_an_object", dep(status="broken"), "status is not an object"),
    ("conditions_not_a_list", dep(status={"conditions": {"type": "Ready"}}),
     "status.conditions is not a list"),
    ("condition_not_an_object", obj("tensorstack.dev/v1beta1", "MLService",
                                    status={"conditions": ["garbage", cond("Ready", "True")]}),
     "status.conditions[0] is not an object"),
    ("condition_field_not_a_string", dep(status={"conditions": [{"type": "Ready", "status": True}]}),
     "status.conditions[0].status is not a string"),
    ("generation_not_an_integer", dep(generation="2"), "metadata.generation is not an integer"),
    ("observed_generation_not_an_integer", dep(status={"observedGeneration": "1"}),
     "status.observedGeneration is not an integer"),
    ("deletion_timestamp_not_a_string", dep(deletionTimestamp=5),
     "metadata.deletionTimestamp is not a string"),
    ("metadata_not_an_object", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": "x"},
     "metadata is not an object"),
]


@pytest.mark.parametrize(("o", "why"), [pytest.param(o, w, id=n) for n, o, w in MALFORMED])
def test_malformed_objects_are_not_ready(o: dict[str, Any], why: str) -> None:
    """kstatus returns an error for these shapes; hmls reports not ready, never raises."""
    assert health(o) == Health(False, f"malformed object: {why}")


def test_nulls_count_as_absent() -> None:
    o = dep(status={**DEP_OK_STATUS, "observedGeneration": None, "conditions": [
        None, *DEP_OK_STATUS["conditions"]]}, deletionTimestamp=None)
    assert health(o) == READY


# -- apps/Deployment -------------------------------------------------------------------------

DEPLOYMENT: list[Row] = [
    ("depNoStatus", dep(), not_ready("0 of 1 replicas created")),
    ("depOK", dep(status=DEP_OK_STATUS), READY),
    ("TestExampleCompute", dep(status=DEP_OK_STATUS), READY),
    ("depNotProgressing", dep(spec={"progressDeadlineSeconds": 45}, status={
        **DEP_OK_STATUS, "conditions": [cond("Progressing", "False", "Some reason"),
                                        cond("Available", "True")]}),
     not_ready("new ReplicaSet not available yet")),
    ("depNoProgressDeadlineSeconds", dep(status={**DEP_OK_STATUS, "conditions": [cond("Available", "True")]}),
     READY),
    ("depNotAvailable", dep(status={**DEP_OK_STATUS, "conditions": [
        cond("Progressing", "True", "NewReplicaSetAvailable"), cond("Available", "False")]}),
     not_ready("Deployment not Available")),
    ("progress_deadline_exceeded", dep(spec={"progressDeadlineSeconds": 600}, status={
        **DEP_OK_STATUS, "conditions": [cond("Progressing", "False", "ProgressDeadlineExceeded"),
                                        cond("Available", "True")]}),
     failed("progress deadline exceeded")),
    ("deadline_set_and_progressing",
     dep(spec={"replicas": 1, "progressDeadlineSeconds": 600}, status=DEP_OK_STATUS), READY),
    ("deadline_max_int32_means_none", dep(spec={"progressDeadlineSeconds": 2**31 - 1}, status={
        **DEP_OK_STATUS, "conditions": [cond("Available", "True")]}), READY),
    ("too_few_updated",
     dep(spec={"replicas": 3}, status={**DEP_OK_STATUS, "replicas": 3, "updatedReplicas": 2}),
     not_ready("2 of 3 replicas updated")),
    ("old_pods_terminating", dep(spec={"replicas": 1}, status={**DEP_OK_STATUS, "replicas": 2}),
     not_ready("1 old replicas pending termination")),
    ("too_few_available", dep(spec={"replicas": 3}, status={
        **DEP_OK_STATUS, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 2}),
     not_ready("2 of 3 replicas available")),
    ("too_few_ready", dep(spec={"replicas": 3}, status={
        **DEP_OK_STATUS, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "readyReplicas": 2}),
     not_ready("2 of 3 replicas ready")),
    ("scaled_to_zero", dep(spec={"replicas": 0}, status={"observedGeneration": 1, "conditions": [
        cond("Progressing", "True", "NewReplicaSetAvailable"), cond("Available", "True")]}), READY),
    ("extensions_group", obj("extensions/v1beta1", "Deployment"), not_ready("0 of 1 replicas created")),
]


@rows(DEPLOYMENT)
def test_deployment(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- apps/StatefulSet ------------------------------------------------------------------------

def sts(**kw: Any) -> dict[str, Any]:
    return obj("apps/v1", "StatefulSet", **kw)


STS_OK: dict[str, Any] = {"observedGeneration": 1, "currentReplicas": 4, "readyReplicas": 4, "replicas": 4}

STATEFULSET: list[Row] = [
    ("stsNoStatus", sts(), not_ready("0 of 1 replicas created")),
    ("stsBadStatus", sts(status={"observedGeneration": 1, "currentReplicas": 1}),
     not_ready("0 of 1 replicas created")),
    ("stsOK", sts(spec={"replicas": 4}, status=STS_OK), READY),
    ("stsLessReady", sts(spec={"replicas": 4}, status={**STS_OK, "readyReplicas": 2}),
     not_ready("2 of 4 replicas ready")),
    ("stsLessCurrent", sts(spec={"replicas": 4}, status={**STS_OK, "currentReplicas": 2}),
     not_ready("2 of 4 replicas at the current revision")),
    ("stsExtraPods", sts(spec={"replicas": 4}, status={**STS_OK, "replicas": 8}),
     not_ready("4 extra replicas pending termination")),
    ("on_delete_is_user_managed", sts(spec={"replicas": 4, "updateStrategy": {"type": "OnDelete"}}),
     Health(True, "OnDelete update strategy")),
    ("revision_mismatch", sts(spec={"replicas": 4}, status={
        **STS_OK, "currentRevision": "web-1", "updateRevision": "web-2"}),
     not_ready("update revision not rolled out yet")),
    ("partition_rollout_in_progress", sts(
        spec={"replicas": 4, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
        status={**STS_OK, "updatedReplicas": 2}),
     not_ready("2 of 3 replicas updated (partition 1)")),
    ("partition_rollout_done_skips_revision_check", sts(
        spec={"replicas": 4, "updateStrategy": {"rollingUpdate": {"partition": 1}}},
        status={**STS_OK, "updatedReplicas": 3, "currentReplicas": 1,
                "currentRevision": "web-1", "updateRevision": "web-2"}),
     READY),
    ("defaulted_partition_zero", sts(
        spec={"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}},
        status={"replicas": 2, "readyReplicas": 2, "updatedReplicas": 1}),
     not_ready("1 of 2 replicas updated (partition 0)")),
]


@rows(STATEFULSET)
def test_statefulset(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- apps/DaemonSet --------------------------------------------------------------------------

def ds(**kw: Any) -> dict[str, Any]:
    return obj("apps/v1", "DaemonSet", **kw)


DS_OK: dict[str, Any] = {
    "desiredNumberScheduled": 4, "currentNumberScheduled": 4, "updatedNumberScheduled": 4,
    "numberAvailable": 4, "numberReady": 4, "observedGeneration": 1}

DAEMONSET: list[Row] = [
    ("dsNoStatus", ds(), not_ready("status.observedGeneration not reported yet")),
    ("dsBadStatus", ds(status={"observedGeneration": 1, "currentReplicas": 1}),
     not_ready("status.desiredNumberScheduled not reported yet")),
    ("dsOK", ds(status=DS_OK), READY),
    ("dsLessReady", ds(status={**DS_OK, "numberReady": 2}), not_ready("2 of 4 pods ready")),
    ("dsLessAvailable", ds(status={**DS_OK, "numberAvailable": 2}), not_ready("2 of 4 pods available")),
    ("less_scheduled", ds(status={**DS_OK, "currentNumberScheduled": 3}), not_ready("3 of 4 pods scheduled")),
    ("less_updated", ds(status={**DS_OK, "updatedNumberScheduled": 1}), not_ready("1 of 4 pods updated")),
    ("no_generation", ds(generation=None, status=DS_OK), not_ready("metadata.generation not set")),
    ("no_nodes", ds(status={**DS_OK, "desiredNumberScheduled": 0, "numberReady": 0}), READY),
]


@rows(DAEMONSET)
def test_daemonset(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- apps/ReplicaSet -------------------------------------------------------------------------

def rs(**kw: Any) -> dict[str, Any]:
    return obj("apps/v1", "ReplicaSet", **kw)


RS4: dict[str, Any] = {"observedGeneration": 1, "replicas": 4, "readyReplicas": 4, "availableReplicas": 4,
                       "fullyLabeledReplicas": 4}

REPLICASET: list[Row] = [
    ("rsNoStatus", rs(), not_ready("0 of 1 replicas labelled")),
    ("rsOK1", rs(spec={"replicas": 2}, status={
        "observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
        "fullyLabeledReplicas": 2, "conditions": [cond("ReplicaFailure", "False")]}), READY),
    ("rsOK2", rs(spec={"replicas": 2}, status={
        "observedGeneration": 1, "fullyLabeledReplicas": 2, "replicas": 2, "readyReplicas": 2,
        "availableReplicas": 2}), READY),
    ("rsLessAvailable", rs(spec={"replicas": 4}, status={**RS4, "availableReplicas": 2}),
     not_ready("2 of 4 replicas available")),
    ("rsLessReady", rs(spec={"replicas": 4}, status={**RS4, "readyReplicas": 2}),
     not_ready("2 of 4 replicas ready")),
    ("rsReplicaFailure",
     rs(spec={"replicas": 4}, status={**RS4, "conditions": [cond("ReplicaFailure", "True")]}),
     not_ready("replica failure")),
    ("extra_pods", rs(spec={"replicas": 2}, status={**RS4, "replicas": 3}),
     not_ready("1 extra replicas pending termination")),
]


@rows(REPLICASET)
def test_replicaset(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- batch/Job -------------------------------------------------------------------------------

def job(**kw: Any) -> dict[str, Any]:
    return obj("batch/v1", "Job", **kw)


JOB: list[Row] = [
    ("jobNoStatus", job(), not_ready("not started yet")),
    ("jobComplete", job(status={"succeeded": 1, "active": 0, "conditions": [cond("Complete", "True")]}),
     Health(True, "complete: 1 of 1 succeeded")),
    ("jobFailed", job(spec={"completions": 4}, status={
        "succeeded": 3, "failed": 1, "conditions": [cond("Failed", "True", "JobFailed")]}),
     failed("failed: 1 of 4 failed")),
    ("jobInProgress", job(spec={"completions": 10, "parallelism": 2}, status={
        "startTime": "2019-06-04T01:17:13Z", "succeeded": 3, "failed": 1, "active": 2,
        "conditions": [cond("Failed", "False"), cond("Complete", "False")]}),
     Health(True, "running: 2 active, 3 succeeded, 1 failed")),
    # core_test.go
    ("TestSuspendedJobConditions",
     job(spec={"suspend": True}, status={"conditions": [cond("Suspended", "True")]}),
     Health(True, "suspended")),
    ("TestPreviouslySuspendedJobConditions", job(spec={"suspend": False}, status={
        "conditions": [cond("Suspended", "False")]}), not_ready("not started yet")),
    ("TestSuspendedJobTransitionConditions/to", job(spec={"suspend": True}, status={
        "conditions": [cond("Suspended", "False")]}), not_ready("not started yet")),
    ("TestSuspendedJobTransitionConditions/from", job(spec={"suspend": False}, status={
        "conditions": [cond("Suspended", "True")]}), not_ready("not started yet")),
    ("completions_default_to_parallelism", job(spec={"parallelism": 3}, status={
        "succeeded": 3, "conditions": [cond("Complete", "True")]}),
     Health(True, "complete: 3 of 3 succeeded")),
]


@rows(JOB)
def test_job(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- v1/Pod ----------------------------------------------------------------------------------

def pod(**kw: Any) -> dict[str, Any]:
    return obj("v1", "Pod", **kw)


UNSCHEDULABLE = cond("PodScheduled", "False", "Unschedulable")

POD: list[Row] = [
    ("podNoStatus", pod(), not_ready("no phase reported yet")),
    ("podReady", pod(status={"conditions": [cond("Ready", "True")], "phase": "Running"}), READY),
    ("podCompletedSuccessfully", pod(status={"phase": "Succeeded", "conditions": [
        cond("Ready", "False", "PodCompleted")]}), Health(True, "finished: Succeeded")),
    ("podCompletedFailed",
     pod(status={"phase": "Failed", "conditions": [cond("Ready", "False", "PodCompleted")]}),
     Health(True, "finished: Failed")),
    ("podBeingScheduled", pod(creationTimestamp="2024-06-01T12:00:00Z", status={
        "phase": "Pending", "conditions": [UNSCHEDULABLE]}), not_ready("unschedulable")),
    ("podUnschedulable", pod(status={"phase": "Pending", "conditions": [UNSCHEDULABLE]}),
     not_ready("unschedulable")),
    ("podCrashLooping", pod(status={"phase": "Running", "conditions": [UNSCHEDULABLE], "containerStatuses": [
        {"name": "nginx", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
     not_ready("crash-looping: nginx")),
    # status_augment_test.go
    ("no existing conditions", pod(status={"phase": "Running"}), not_ready("running, not Ready")),
    ("has other existing conditions", pod(status={"phase": "Running", "conditions": [
        cond("Ready", "False", "Pod has not started")]}), not_ready("running, not Ready")),
    ("pending", pod(status={"phase": "Pending"}), not_ready("pending")),
    ("unknown_phase", pod(status={"phase": "Unknown"}), not_ready("unknown phase Unknown")),
    ("second_ready_condition_counts", pod(status={"phase": "Running", "conditions": [
        cond("Ready", "False"), cond("Ready", "True")]}), READY),
]


@rows(POD)
def test_pod(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- v1/PersistentVolumeClaim ----------------------------------------------------------------

PVC: list[Row] = [
    ("pvcNoStatus", obj("v1", "PersistentVolumeClaim"), not_ready("phase unknown, not Bound")),
    ("pvcBound", obj("v1", "PersistentVolumeClaim", status={"phase": "Bound"}), Health(True, "Bound")),
    ("pending", obj("v1", "PersistentVolumeClaim", status={"phase": "Pending"}),
     not_ready("phase Pending, not Bound")),
    ("lost", obj("v1", "PersistentVolumeClaim", status={"phase": "Lost"}),
     not_ready("phase Lost, not Bound")),
]


@rows(PVC)
def test_persistentvolumeclaim(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- v1/Service ------------------------------------------------------------------------------

def svc(**kw: Any) -> dict[str, Any]:
    return obj("v1", "Service", **kw)


SERVICE: list[Row] = [
    ("serviceDefault", svc(), READY),
    ("serviceNodePort", svc(spec={"type": "NodePort"}), READY),
    ("serviceLBok", svc(spec={"type": "LoadBalancer", "clusterIP": "1.2.3.4"}), READY),
    ("serviceLBnok", svc(spec={"type": "LoadBalancer"}), not_ready("LoadBalancer has no cluster IP yet")),
    ("lb_with_ip_but_no_ingress_is_current_in_kstatus", svc(
        spec={"type": "LoadBalancer", "clusterIP": "10.0.0.7"}, status={"loadBalancer": {}}), READY),
    ("headless", svc(spec={"clusterIP": "None"}), READY),
]


@rows(SERVICE)
def test_service(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- apiextensions.k8s.io/CustomResourceDefinition -------------------------------------------

def crd(**kw: Any) -> dict[str, Any]:
    return obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", **kw)


CRD: list[Row] = [
    ("crdNoConditions", crd(), not_ready("installing")),
    ("crdInstalling", crd(status={"conditions": [cond("NamesAccepted", "True", "NoConflicts"),
                                                 cond("Established", "False", "Installing")]}),
     not_ready("installing")),
    ("crdNamesNotAccepted", crd(status={"conditions": [cond("NamesAccepted", "False", "SomeReason")]}),
     not_ready("names not accepted: SomeReason")),
    ("crdEstablished", crd(status={"conditions": [cond("NamesAccepted", "True", "NoConflicts"),
                                                  cond("Established", "True", "InitialNamesAccepted")]}),
     Health(True, "Established")),
]


@rows(CRD)
def test_customresourcedefinition(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- kinds without a rule: ready once applied -----------------------------------------------

NO_RULE: list[tuple[str, dict[str, Any]]] = [
    # status_compute_test.go TestCRDGenericStatus, TestPDBStatus, TestCronJobStatus
    ("crdNoStatus", obj("something/v1", "MyCR")),
    ("crdNoCondition", obj("something/v1", "MyCR", status={"conditions": [cond("SomeCondition", "False")]})),
    ("pdbObserved", obj("policy/v1beta1", "PodDisruptionBudget", status={"observedGeneration": 1})),
    ("cronjobNoStatus", obj("batch/v1", "CronJob")),
    ("cronjobWithStatus", {**obj("batch/v1", "CronJob"), "status": None}),
    # status_augment_test.go
    ("custom resource with no conditions", obj("v1beta1", "SomeCustomKind", status={"conditions": []})),
    ("configmap", obj("v1", "ConfigMap")),
    ("secret", obj("v1", "Secret")),
    ("namespace", obj("v1", "Namespace", generation=None)),
    ("ready_condition_ignored_on_kinds_kstatus_knows", obj("v1", "ConfigMap", status={
        "conditions": [cond("Ready", "False")]})),
    ("ready_with_odd_status_is_skipped", obj("example.com/v1", "Widget", status={
        "conditions": [cond("Ready", "Maybe")]})),
    ("no_api_version_or_kind", {"metadata": {}}),
]


@pytest.mark.parametrize("o", [pytest.param(o, id=n) for n, o in NO_RULE])
def test_kinds_without_a_rule_return_none(o: dict[str, Any]) -> None:
    assert health(o) is None


def test_none_object() -> None:
    assert health(None) is None


# -- custom resources with a Ready condition ---------------------------------------------------

def widget(**kw: Any) -> dict[str, Any]:
    return obj("example.com/v1alpha1", "Widget", **kw)


CUSTOM: list[Row] = [
    ("crdReady", obj("something/v1", "MyCR", status={"conditions": [
        cond("Ready", "True", "AllOk", "All looks ok")]}), READY),
    ("crdNotReady", obj("something/v1", "MyCR", status={"observedGeneration": 1, "conditions": [
        cond("Ready", "False", "NotReadyYet")]}), not_ready("NotReadyYet")),
    ("ready_unknown", widget(status={"conditions": [cond("Ready", "Unknown")]}),
     not_ready("Ready is Unknown")),
    ("message_over_reason", widget(status={"conditions": [cond("Ready", "False", "Waiting", "0 of 1 up")]}),
     not_ready("0 of 1 up")),
    ("ready_and_generation_observed", widget(generation=3, status={"observedGeneration": 3, "conditions": [
        cond("Ready", "True")]}), READY),
    ("ready_but_generation_not_observed", widget(generation=3, status={
        "observedGeneration": 2, "conditions": [cond("Ready", "True")]}),
     not_ready("status.observedGeneration 2 < metadata.generation 3")),
    ("first_decisive_ready_wins", widget(status={"conditions": [
        cond("Ready", "Maybe"), cond("Ready", "True"), cond("Ready", "False")]}), READY),
    ("wrong_group_mlservice_is_generic", obj("example.com/v1", "MLService", status={
        "conditions": [cond("Ready", "True"), cond("Paused", "True")]}), READY),
    ("mlservice_runtime_is_generic", obj("tensorstack.dev/v1beta1", "MLServiceRuntime", status={
        "conditions": [cond("Ready", "True")]}), READY),
]


@rows(CUSTOM)
def test_custom_resources(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- tensorstack.dev/MLService (stricter than kstatus) ------------------------------------------

def mls(api_version: str = "tensorstack.dev/v1beta1", **kw: Any) -> dict[str, Any]:
    return obj(api_version, "MLService", **kw)


def conds(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"conditions": list(items), **extra}


READY_C = cond("Ready", "True")
NOT_PAUSED = cond("Paused", "False")

MLSERVICE: list[Row] = [
    ("ready", mls(status=conds(NOT_PAUSED, READY_C)), READY),
    ("ready_without_paused_condition", mls(status=conds(READY_C)), READY),
    ("any_version_of_the_group", mls("tensorstack.dev/v1", status=conds(READY_C)), READY),
    ("not_ready_uses_message", mls(status=conds(NOT_PAUSED, cond(
        "Ready", "False", "PredictorNotReady", "0 of 1 replicas ready"))),
     not_ready("0 of 1 replicas ready")),
    ("not_ready_falls_back_to_reason", mls(status=conds(cond("Ready", "False", "PredictorNotReady"))),
     not_ready("PredictorNotReady")),
    ("not_ready_falls_back_to_status_false", mls(status=conds(cond("Ready", "False"))),
     not_ready("Ready is False")),
    ("not_ready_falls_back_to_status_unknown", mls(status=conds(cond("Ready", "Unknown"))),
     not_ready("Ready is Unknown")),
    ("odd_ready_status_is_not_ready", mls(status=conds(cond("Ready", "Maybe"))), not_ready("Ready is Maybe")),
    ("paused_wins_over_ready", mls(status=conds(cond("Paused", "True"), READY_C)), not_ready("paused")),
    ("no_status", mls(), not_ready("no status reported yet")),
    ("empty_status", mls(status={}), not_ready("no status reported yet")),
    ("only_paused_false", mls(status=conds(NOT_PAUSED)), not_ready("no Ready condition reported yet")),
    ("address_only", mls(status={"address": {"url": "http://x"}}),
     not_ready("no Ready condition reported yet")),
    ("null_conditions", mls(status={"conditions": None, "releases": []}),
     not_ready("no Ready condition reported yet")),
    ("other_conditions_only", mls(status=conds(cond("Other", "True"))),
     not_ready("no Ready condition reported yet")),
    ("generation_not_observed", mls(generation=2, status=conds(READY_C, observedGeneration=1)),
     not_ready("status.observedGeneration 1 < metadata.generation 2")),
    ("terminating", mls(deletionTimestamp="2024-01-01T00:00:00Z", status=conds(READY_C)),
     not_ready("terminating")),
    ("stalled", mls(status=conds(READY_C, cond("Stalled", "True", "BadRuntime"))),
     failed("Stalled: BadRuntime")),
]


@rows(MLSERVICE)
def test_mlservice(o: dict[str, Any], want: Health) -> None:
    assert health(o) == want


# -- spec_subset ------------------------------------------------------------------------------

FULL_STS_SPEC: dict[str, Any] = {
    "replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
    "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}},
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1, "maxUnavailable": 1}},
    "podManagementPolicy": "Parallel"}

SUBSETS: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = [
    ("apps/v1", "Deployment", {"replicas": 2, "progressDeadlineSeconds": 600, "strategy": {}, "template": {}},
     {"replicas": 2, "progressDeadlineSeconds": 600}),
    ("apps/v1", "Deployment", {"template": {}}, {}),
    ("apps/v1", "Deployment", None, {}),
    ("apps/v1", "StatefulSet", FULL_STS_SPEC,
     {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}),
    ("apps/v1", "StatefulSet", {"updateStrategy": {"type": "OnDelete"}},
     {"updateStrategy": {"type": "OnDelete"}}),
    ("apps/v1", "ReplicaSet", {"replicas": 2, "selector": {}}, {"replicas": 2}),
    ("batch/v1", "Job",
     {"parallelism": 2, "completions": 4, "suspend": False, "backoffLimit": 6, "template": {}},
     {"parallelism": 2, "completions": 4, "suspend": False}),
    ("v1", "Service", {"type": "LoadBalancer", "clusterIP": "10.0.0.1", "ports": [{"port": 80}]},
     {"type": "LoadBalancer", "clusterIP": "10.0.0.1"}),
    ("apps/v1", "DaemonSet", {"template": {}}, None),
    ("v1", "Pod", {"containers": []}, None),
    ("v1", "PersistentVolumeClaim", {"resources": {}}, None),
    ("v1", "ConfigMap", None, None),
    ("tensorstack.dev/v1beta1", "MLService", {"releases": []}, None),
    ("example.com/v1", "Widget", {"size": 3}, None),
]


@pytest.mark.parametrize(("api_version", "kind", "spec", "want"), SUBSETS)
def test_spec_subset(api_version: str, kind: str, spec: dict[str, Any] | None,
                     want: dict[str, Any] | None) -> None:
    before = copy.deepcopy(spec)
    assert spec_subset(api_version, kind, spec) == want
    assert spec == before


def test_spec_subset_is_a_copy() -> None:
    spec = {"updateStrategy": {"rollingUpdate": {"partition": 1}}}
    sub = spec_subset("apps/v1", "StatefulSet", spec)
    assert sub is not None
    sub["updateStrategy"]["rollingUpdate"]["partition"] = 9
    assert spec["updateStrategy"]["rollingUpdate"]["partition"] == 1


ALL_ROWS: list[Row] = (GENERIC + DEPLOYMENT + STATEFULSET + DAEMONSET + REPLICASET + JOB + POD + PVC + SERVICE
                       + CRD + CUSTOM + MLSERVICE + [(n, o, READY) for n, o in NO_RULE])

NOISE: dict[str, Any] = {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                         "selector": {"matchLabels": {"app": "x"}}, "ports": [{"port": 80}]}


def trimmed(o: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(o)
    sub = spec_subset(o.get("apiVersion", ""), o.get("kind", ""), o.get("spec"))
    if sub is None:
        out.pop("spec", None)
    else:
        out["spec"] = sub
    return out


@pytest.mark.parametrize("o", [pytest.param(o, id=n) for n, o, _ in ALL_ROWS])
def test_table_verdicts_survive_trimming_the_spec(o: dict[str, Any]) -> None:
    full = copy.deepcopy(o)
    full["spec"] = {**NOISE, **(o.get("spec") or {})}
    assert health(trimmed(full)) == health(full) == health(o)


SPEC_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 5), st.just(2**31 - 1),
    st.sampled_from(["", "OnDelete", "RollingUpdate", "LoadBalancer", "NodePort", "1.2.3.4"]))
SPECS = st.fixed_dictionaries({}, optional={
    "replicas": SPEC_VALUES, "progressDeadlineSeconds": SPEC_VALUES, "parallelism": SPEC_VALUES,
    "completions": SPEC_VALUES, "suspend": SPEC_VALUES, "type": SPEC_VALUES, "clusterIP": SPEC_VALUES,
    "template": st.just(NOISE["template"]),
    "updateStrategy": st.one_of(SPEC_VALUES, st.fixed_dictionaries({}, optional={
        "type": SPEC_VALUES, "maxUnavailable": SPEC_VALUES,
        "rollingUpdate": st.one_of(SPEC_VALUES, st.fixed_dictionaries({}, optional={
            "partition": SPEC_VALUES, "maxUnavailable": SPEC_VALUES}))})),
})


TABLES: dict[str, list[Row]] = {
    "generic": GENERIC, "deployment": DEPLOYMENT, "statefulset": STATEFULSET, "daemonset": DAEMONSET,
    "replicaset": REPLICASET, "job": JOB, "pod": POD, "pvc": PVC, "service": SERVICE, "crd": CRD,
    "custom": CUSTOM, "mlservice": MLSERVICE, "no_rule": [(n, o, READY) for n, o in NO_RULE]}


@pytest.mark.parametrize("table", TABLES.values(), ids=TABLES.keys())
@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=SPECS)
def test_any_spec_gives_the_same_verdict_as_its_subset(table: list[Row], data: st.DataObject,
                                                       spec: dict[str, Any]) -> None:
    _, row, _ = data.draw(st.sampled_from(table))
    o = {**copy.deepcopy(row), "spec": spec}
    assert health(trimmed(o)) == health(o)


# -- condition --------------------------------------------------------------------------------

def test_condition_lookup() -> None:
    ready = cond("Ready", "True")
    st_ = conds(NOT_PAUSED, ready, cond("Ready", "False"))
    assert condition(st_, "Ready") is ready
    assert condition(st_, "Missing") is None
    assert condition(None, "Ready") is None
    assert condition({"conditions": None}, "Ready") is None
    assert condition({"conditions": ["garbage", ready]}, "Ready") is ready
