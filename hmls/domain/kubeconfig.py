"""Vetting kubeconfigs that arrive in cluster Secrets.

A kubeconfig is code: ``exec`` and ``auth-provider`` run programs, ``tokenFile`` and
certificate paths read files on the controller's host, ``proxy-url`` reroutes traffic and
``insecure-skip-tls-verify`` turns TLS off.  ``vet`` accepts only inline data (server, CA data,
client certificate/key data, token) for the current context and returns a fresh, minimal
kubeconfig built from those fields alone; anything else is refused with a precise reason
unless the operator's policy allows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


class KubeconfigRefused(ValueError):
    """The kubeconfig cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class KubeconfigPolicy:
    allow_exec: bool = False          # exec and auth-provider plugins
    allow_files: bool = False         # tokenFile, certificate/key file paths
    allow_insecure: bool = False      # insecure-skip-tls-verify
    allow_proxy: bool = False         # proxy-url


_CLUSTER_KEYS = {"server", "certificate-authority-data", "tls-server-name"}
_USER_KEYS = {"client-certificate-data", "client-key-data", "token"}
_FILE_KEYS_CLUSTER = {"certificate-authority"}
_FILE_KEYS_USER = {"client-certificate", "client-key", "tokenFile"}


def _named(cfg: dict[str, Any], section: str, name: str, inner: str) -> dict[str, Any]:
    for entry in cfg.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(inner) or {}
            if not isinstance(value, dict):
                raise KubeconfigRefused(f"{section} entry {name!r} has no {inner} mapping")
            return value
    raise KubeconfigRefused(f"kubeconfig has no {section} entry named {name!r}")


def vet(raw: bytes | str, policy: KubeconfigPolicy | None = None) -> dict[str, Any]:
    """Return a minimal kubeconfig for the current context, or raise KubeconfigRefused."""
    policy = policy or KubeconfigPolicy()
    try:
        cfg = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KubeconfigRefused(f"kubeconfig is not valid YAML{where}") from None
    if not isinstance(cfg, dict):
        raise KubeconfigRefused("kubeconfig is not a YAML mapping")
    for section in ("contexts", "clusters", "users"):
        if not isinstance(cfg.get(section) or [], list):
            raise KubeconfigRefused(f"kubeconfig {section} must be a list")
    contexts = [c for c in cfg.get("contexts") or [] if isinstance(c, dict)]
    current = cfg.get("current-context") or (contexts[0].get("name") if len(contexts) == 1 else None)
    if not current:
        raise KubeconfigRefused("kubeconfig has no current-context")
    context = _named(cfg, "contexts", current, "context")
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not cluster_name:
        raise KubeconfigRefused(f"context {current!r} names no cluster")
    cluster = _named(cfg, "clusters", str(cluster_name), "cluster")
    user = _named(cfg, "users", str(user_name), "user") if user_name else {}

    problems: list[str] = []
    if "exec" in user and not policy.allow_exec:
        problems.append("user.exec runs a program on the controller's host")
    if "auth-provider" in user and not policy.allow_exec:
        problems.append("user.auth-provider runs a plugin on the controller's host")
    if not policy.allow_files:
        problems += [f"user.{k} reads a file on the controller's host"
                     for k in sorted(_FILE_KEYS_USER & user.keys())]
        problems += [f"cluster.{k} reads a file on the controller's host"
                     for k in sorted(_FILE_KEYS_CLUSTER & cluster.keys())]
    if cluster.get("insecure-skip-tls-verify") and not policy.allow_insecure:
        problems.append("cluster.insecure-skip-tls-verify disables TLS verification")
    if cluster.get("proxy-url") and not policy.allow_proxy:
        problems.append("cluster.proxy-url sends traffic through a proxy")
    if {"username", "password"} & user.keys():
        problems.append("user.username/password (basic auth) is not supported")
    if problems:
        raise KubeconfigRefused("kubeconfig refused: " + "; ".join(problems))

    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise KubeconfigRefused("cluster.server must be an http(s) URL")

    allowed_cluster = set(_CLUSTER_KEYS)
    allowed_user = set(_USER_KEYS)
    if policy.allow_files:
        allowed_cluster |= _FILE_KEYS_CLUSTER
        allowed_user |= _FILE_KEYS_USER
    if policy.allow_insecure:
        allowed_cluster.add("insecure-skip-tls-verify")
    if policy.allow_proxy:
        allowed_cluster.add("proxy-url")
    if policy.allow_exec:
        allowed_user |= {"exec", "auth-provider"}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {k: v for k, v in cluster.items()
                                                if k in allowed_cluster}}],
        "users": [{"name": "u", "user": {k: v for k, v in user.items() if k in allowed_user}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
