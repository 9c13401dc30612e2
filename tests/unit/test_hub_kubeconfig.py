"""Which configuration the hub client loads (``hmls …`` and ``kubectl hmls …`` alike):
controller-runtime's order, and ``--context`` picking a context of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hmls.kube import errors
from hmls.kube.client import ClusterClient, hub_kubeconfig


def kubeconfig(path: Path, *names: str, current: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": n, "cluster": {"server": f"https://{n}.example:6443"}}
                     for n in names],
        "users": [{"name": n, "user": {"token": f"token-{n}"}} for n in names],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in names]}))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return tmp_path


def test_the_order_is_flag_env_in_cluster_home(home: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.KubeError, match=r"^no hub kubeconfig: give --kubeconfig, set "
                       r"\$KUBECONFIG or write ~/.kube/config \(in a pod, its service account"):
        hub_kubeconfig(None)
    (home / ".kube").mkdir()
    kubeconfig(home / ".kube" / "config", "a", current="a")
    assert hub_kubeconfig(None) == str(home / ".kube" / "config")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert hub_kubeconfig(None) is None  # in a pod, before ~/.kube/config
    monkeypatch.setenv("KUBECONFIG", "/x:/y")
    assert hub_kubeconfig(None) == "/x:/y"
    assert hub_kubeconfig("/given") == "/given"


async def test_kubeconfig_files_merge_and_the_context_picks(home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    one = kubeconfig(home / "one", "a", current="a")
    two = kubeconfig(home / "two", "b", current="b")
    monkeypatch.setenv("KUBECONFIG", f"{one}:{two}")
    for context, server in ((None, "https://a.example:6443"), ("b", "https://b.example:6443")):
        client = await ClusterClient.for_hub(None, context=context)
        try:
            assert client.server == server
        finally:
            await client.close()
    with pytest.raises(errors.KubeError, match=r"^hub kubeconfig: .*nope"):
        await ClusterClient.for_hub(None, context="nope")
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(errors.KubeError, match=r"^--context b: in a cluster without a kubeconfig"):
        await ClusterClient.for_hub(None, context="b")
