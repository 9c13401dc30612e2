"""The binary cache: a cached binary is returned without building; a missing one without Go
fails with a message that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from hmls_devenv import binaries


def test_cached_binary_is_used_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMLS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")  # no go: any build attempt would fail
    cached = tmp_path / f"etcd-{binaries.ETCD_VERSION}"
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)
    assert binaries.ensure(binaries.ETCD) == cached


def test_cache_is_keyed_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMLS_CACHE_DIR", str(tmp_path))
    assert binaries.cached_path(binaries.KUBE_APISERVER).name == "kube-apiserver-v1.34.4"
    assert binaries.cached_path(binaries.ETCD).parent == tmp_path


def test_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMLS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(binaries.BuildError, match="the 'go' command is not on PATH"):
        binaries.ensure(binaries.KUBE_APISERVER)
    assert not any(tmp_path.iterdir())


def test_wrapper_modules_pin_the_versions() -> None:
    kas = (binaries.SOURCES / "kube-apiserver" / "go.mod").read_text()
    assert "k8s.io/kubernetes v1.34.4" in kas
    assert kas.count("=> k8s.io/") == 31 and kas.count("v0.34.4") >= 31
    assert "go.etcd.io/etcd/server/v3 v3.6.16" in (binaries.SOURCES / "etcd" / "go.mod").read_text()
    assert "sigs.k8s.io/cli-utils v0.37.2" in (binaries.SOURCES / "kstatus" / "go.mod").read_text()
    for name in ("kube-apiserver", "etcd", "kstatus"):
        assert (binaries.SOURCES / name / "go.sum").stat().st_size > 1000
