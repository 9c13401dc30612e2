"""Unit tests for hmls.domain.kubeconfig: what ``vet`` accepts, returns and refuses."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hmls.domain.kubeconfig import KubeconfigPolicy, KubeconfigRefused, vet

SERVER = "https://10.0.0.1:6443"
CA = "Q0EtREFUQQ=="
CERT = "Q0VSVA=="
KEY = "S0VZ"


def kubeconfig(cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
               **top: Any) -> dict[str, Any]:
    """A two-context kubeconfig whose current context is 'spoke' (cluster 'c1', user 'u1')."""
    cfg: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {"colors": True},
        "clusters": [
            {"name": "c1", "cluster": cluster if cluster is not None else {
                "server": SERVER, "certificate-authority-data": CA}},
            {"name": "c2", "cluster": {"server": "https://other:6443"}},
        ],
        "users": [
            {"name": "u1", "user": user if user is not None else {
                "client-certificate-data": CERT, "client-key-data": KEY}},
            {"name": "u2", "user": {"exec": {"command": "/bin/evil"}}},
        ],
        "contexts": [
            {"name": "spoke", "context": {"cluster": "c1", "user": "u1", "namespace": "ns1"}},
            {"name": "other", "context": {"cluster": "c2", "user": "u2"}},
        ],
        "current-context": "spoke",
    }
    cfg.update(top)
    return cfg


def dump(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg)


def refusal(cfg: dict[str, Any] | str, policy: KubeconfigPolicy | None = None) -> str:
    raw = cfg if isinstance(cfg, str) else dump(cfg)
    with pytest.raises(KubeconfigRefused) as info:
        vet(raw, policy)
    return str(info.value)


def only_cluster(out: dict[str, Any]) -> dict[str, Any]:
    assert len(out["clusters"]) == 1
    cluster: dict[str, Any] = out["clusters"][0]["cluster"]
    return cluster


def only_user(out: dict[str, Any]) -> dict[str, Any]:
    assert len(out["users"]) == 1
    user: dict[str, Any] = out["users"][0]["user"]
    return user


# ----- accepted --------------------------------------------------------------------------


def test_inline_data_yields_minimal_config_for_current_context() -> None:
    out = vet(dump(kubeconfig()))
    assert out == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": SERVER,
                                               "certificate-authority-data": CA}}],
        "users": [{"name": "u", "user": {"client-certificate-data": CERT,
                                         "client-key-data": KEY}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }


def test_bytes_input_is_accepted() -> None:
    out = vet(dump(kubeconfig()).encode())
    assert only_cluster(out)["server"] == SERVER


def test_other_contexts_are_ignored_even_if_they_would_be_refused() -> None:
    # u2 (used only by the non-current context) has exec: it must neither be refused nor copied.
    out = vet(dump(kubeconfig()))
    text = yaml.safe_dump(out)
    assert "/bin/evil" not in text
    assert "other:6443" not in text


def test_current_context_selects_which_cluster_and_user() -> None:
    cfg = kubeconfig()
    cfg["users"][1]["user"] = {"token": "t2"}
    cfg["current-context"] = "other"
    out = vet(dump(cfg))
    assert only_cluster(out) == {"server": "https://other:6443"}
    assert only_user(out) == {"token": "t2"}


def test_extra_fields_are_dropped() -> None:
    cfg = kubeconfig(
        cluster={"server": SERVER, "certificate-authority-data": CA, "tls-server-name": "api",
                 "disable-compression": True, "extensions": [{"name": "x"}]},
        user={"token": "tok", "as": "admin", "as-groups": ["system:masters"],
              "extensions": [{"name": "y"}]},
    )
    out = vet(dump(cfg))
    assert only_cluster(out) == {"server": SERVER, "certificate-authority-data": CA,
                                 "tls-server-name": "api"}
    assert only_user(out) == {"token": "tok"}
    assert "preferences" not in out
    # the context's namespace is not carried over either
    assert out["contexts"] == [{"name": "c", "context": {"cluster": "c", "user": "u"}}]


def test_context_without_user_gives_empty_user() -> None:
    cfg = kubeconfig()
    del cfg["contexts"][0]["context"]["user"]
    assert only_user(vet(dump(cfg))) == {}


def test_single_context_is_used_when_current_context_is_missing() -> None:
    cfg = kubeconfig()
    del cfg["current-context"]
    cfg["contexts"] = cfg["contexts"][:1]
    assert only_cluster(vet(dump(cfg)))["server"] == SERVER


def test_false_insecure_flag_is_not_refused_and_not_copied() -> None:
    cfg = kubeconfig(cluster={"server": SERVER, "insecure-skip-tls-verify": False})
    assert only_cluster(vet(dump(cfg))) == {"server": SERVER}


# ----- refused: dangerous fields ---------------------------------------------------------

FILE_MSG = "reads a file on the controller's host"


@pytest.mark.parametrize(("cluster", "user", "message"), [
    (None, {"exec": {"command": "aws"}},
     "kubeconfig refused: user.exec runs a program on the controller's host"),
    (None, {"auth-provider": {"name": "gcp"}},
     "kubeconfig refused: user.auth-provider runs a plugin on the controller's host"),
    (None, {"tokenFile": "/var/run/token"}, f"kubeconfig refused: user.tokenFile {FILE_MSG}"),
    (None, {"client-certificate": "/etc/c.crt"},
     f"kubeconfig refused: user.client-certificate {FILE_MSG}"),
    (None, {"client-key": "/etc/c.key"}, f"kubeconfig refused: user.client-key {FILE_MSG}"),
    ({"server": SERVER, "certificate-authority": "/etc/ca.crt"}, None,
     f"kubeconfig refused: cluster.certificate-authority {FILE_MSG}"),
    ({"server": SERVER, "insecure-skip-tls-verify": True}, None,
     "kubeconfig refused: cluster.insecure-skip-tls-verify disables TLS verification"),
    ({"server": SERVER, "proxy-url": "http://proxy:3128"}, None,
     "kubeconfig refused: cluster.proxy-url sends traffic through a proxy"),
    (None, {"username": "admin", "password": "secret"},
     "kubeconfig refused: user.username/password (basic auth) is not supported"),
    (None, {"username": "admin"},
     "kubeconfig refused: user.username/password (basic auth) is not supported"),
], ids=["exec", "auth-provider", "tokenFile", "client-certificate", "client-key",
        "certificate-authority", "insecure", "proxy-url", "basic-auth", "username-only"])
def test_refused_field_has_precise_message(cluster: dict[str, Any] | None,
                                           user: dict[str, Any] | None, message: str) -> None:
    assert refusal(kubeconfig(cluster=cluster, user=user)) == message


def test_all_problems_are_listed_together_in_order() -> None:
    cfg = kubeconfig(
        cluster={"server": SERVER, "certificate-authority": "/ca", "proxy-url": "http://p"},
        user={"exec": {"command": "x"}, "tokenFile": "/t", "client-key": "/k"},
    )
    assert refusal(cfg) == (
        "kubeconfig refused: "
        "user.exec runs a program on the controller's host; "
        f"user.client-key {FILE_MSG}; "
        f"user.tokenFile {FILE_MSG}; "
        f"cluster.certificate-authority {FILE_MSG}; "
        "cluster.proxy-url sends traffic through a proxy"
    )


def test_basic_auth_is_refused_even_with_a_permissive_policy() -> None:
    policy = KubeconfigPolicy(allow_exec=True, allow_files=True, allow_insecure=True,
                              allow_proxy=True)
    msg = refusal(kubeconfig(user={"username": "a", "password": "b"}), policy)
    assert msg == "kubeconfig refused: user.username/password (basic auth) is not supported"


# ----- refused: structure ----------------------------------------------------------------


def test_invalid_yaml_reports_line_but_not_content() -> None:
    secret = "sup3r-s3cret-t0ken"
    raw = (
        "apiVersion: v1\n"
        "users:\n"
        f"- name: u\n  user:\n    token: {secret}\n"
        f"    bad: [unterminated {secret}\n"
        "current-context: x\n"
    )
    with pytest.raises(KubeconfigRefused) as info:
        vet(raw)
    msg = str(info.value)
    assert msg.startswith("kubeconfig is not valid YAML at line ")
    line = int(msg.rsplit(" ", 1)[1])
    assert 6 <= line <= 7  # the unterminated flow sequence starts on line 6
    assert secret not in msg
    assert "unterminated" not in msg
    # the parser error (which quotes the YAML) is not chained either
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


def test_invalid_yaml_on_first_line() -> None:
    assert refusal("a: b: c\n") == "kubeconfig is not valid YAML at line 1"


@pytest.mark.parametrize("raw", ["", "- a\n- b\n", "just a string", "42"])
def test_non_mapping_is_refused(raw: str) -> None:
    assert refusal(raw) == "kubeconfig is not a YAML mapping"


def test_missing_current_context_with_several_contexts_is_refused() -> None:
    cfg = kubeconfig()
    del cfg["current-context"]
    assert refusal(cfg) == "kubeconfig has no current-context"


def test_missing_current_context_without_contexts_is_refused() -> None:
    cfg = kubeconfig()
    del cfg["current-context"]
    del cfg["contexts"]
    assert refusal(cfg) == "kubeconfig has no current-context"


def test_current_context_naming_no_context_is_refused() -> None:
    cfg = kubeconfig()
    cfg["current-context"] = "nope"
    assert refusal(cfg) == (
        "kubeconfig has no contexts entry named 'nope'")


def test_missing_cluster_entry_is_refused() -> None:
    cfg = kubeconfig()
    cfg["clusters"] = cfg["clusters"][1:]
    assert refusal(cfg) == "kubeconfig has no clusters entry named 'c1'"


def test_missing_user_entry_is_refused() -> None:
    cfg = kubeconfig()
    cfg["users"] = cfg["users"][1:]
    assert refusal(cfg) == "kubeconfig has no users entry named 'u1'"


def test_context_without_cluster_is_refused() -> None:
    cfg = kubeconfig()
    del cfg["contexts"][0]["context"]["cluster"]
    assert refusal(cfg) == "context 'spoke' names no cluster"


def test_cluster_entry_that_is_not_a_mapping_is_refused() -> None:
    cfg = kubeconfig()
    cfg["clusters"][0]["cluster"] = "https://x"
    assert refusal(cfg) == "clusters entry 'c1' has no cluster mapping"


@pytest.mark.parametrize("server", [None, "", "ftp://host", "10.0.0.1:6443", 6443])
def test_server_must_be_http_url(server: Any) -> None:
    cluster = {"certificate-authority-data": CA}
    if server is not None:
        cluster["server"] = server
    assert refusal(kubeconfig(cluster=cluster)) == "cluster.server must be an http(s) URL"


def test_plain_http_server_is_accepted() -> None:
    out = vet(dump(kubeconfig(cluster={"server": "http://127.0.0.1:8080"})))
    assert only_cluster(out) == {"server": "http://127.0.0.1:8080"}


@pytest.mark.parametrize("section", ["contexts", "clusters", "users"])
def test_non_list_section_is_refused_not_crashing(section: str) -> None:
    cfg = kubeconfig()
    cfg[section] = 5
    with pytest.raises(KubeconfigRefused):
        vet(dump(cfg))


# ----- policy ----------------------------------------------------------------------------


def test_default_policy_refuses_everything_optional() -> None:
    assert KubeconfigPolicy() == KubeconfigPolicy(allow_exec=False, allow_files=False,
                                                  allow_insecure=False, allow_proxy=False)


@pytest.mark.parametrize("user", [
    {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}},
    {"auth-provider": {"name": "oidc", "config": {"idp-issuer-url": "https://i"}}},
])
def test_allow_exec_keeps_plugins(user: dict[str, Any]) -> None:
    out = vet(dump(kubeconfig(user=user)), KubeconfigPolicy(allow_exec=True))
    assert only_user(out) == user


def test_allow_exec_does_not_allow_files() -> None:
    msg = refusal(kubeconfig(user={"exec": {"command": "x"}, "tokenFile": "/t"}),
                  KubeconfigPolicy(allow_exec=True))
    assert msg == f"kubeconfig refused: user.tokenFile {FILE_MSG}"


def test_allow_files_keeps_file_paths() -> None:
    cfg = kubeconfig(
        cluster={"server": SERVER, "certificate-authority": "/etc/ca.crt"},
        user={"client-certificate": "/c.crt", "client-key": "/c.key", "tokenFile": "/t"},
    )
    out = vet(dump(cfg), KubeconfigPolicy(allow_files=True))
    assert only_cluster(out) == {"server": SERVER, "certificate-authority": "/etc/ca.crt"}
    assert only_user(out) == {"client-certificate": "/c.crt", "client-key": "/c.key",
                              "tokenFile": "/t"}


def test_allow_insecure_keeps_flag() -> None:
    cfg = kubeconfig(cluster={"server": SERVER, "insecure-skip-tls-verify": True})
    out = vet(dump(cfg), KubeconfigPolicy(allow_insecure=True))
    assert only_cluster(out) == {"server": SERVER, "insecure-skip-tls-verify": True}


def test_allow_proxy_keeps_proxy_url() -> None:
    cfg = kubeconfig(cluster={"server": SERVER, "proxy-url": "socks5://p:1080"})
    out = vet(dump(cfg), KubeconfigPolicy(allow_proxy=True))
    assert only_cluster(out) == {"server": SERVER, "proxy-url": "socks5://p:1080"}


def test_allow_proxy_does_not_allow_insecure() -> None:
    cfg = kubeconfig(cluster={"server": SERVER, "proxy-url": "http://p",
                              "insecure-skip-tls-verify": True})
    assert refusal(cfg, KubeconfigPolicy(allow_proxy=True)) == (
        "kubeconfig refused: cluster.insecure-skip-tls-verify disables TLS verification")
