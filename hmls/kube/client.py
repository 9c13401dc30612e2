"""ClusterClient: the one I/O seam to a Kubernetes API server.

One instance per cluster, owning one aiohttp session and TLS context (built from an
already-vetted kubeconfig, see ``hmls.domain.kubeconfig``).  kubernetes-asyncio only loads the
kubeconfig; requests go out on our own session: its generated client serialises every body
through model sanitising and opens its session with ``trust_env=True``, which looks up proxy
variables and ``~/.netrc`` in a thread on every request (18% of the controller's CPU at
1,000 CRs before this was changed).  Bodies are raw dicts, sent as JSON.  Every failure
leaves this module as a ``hmls.kube.errors.KubeError``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import tenacity
import yaml
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client import Configuration

from hmls import __version__
from hmls.kube import errors
from hmls.kube.budget import Budget
from hmls.kube.resources import Resource

HOME_KUBECONFIG = "~/.kube/config"


def hub_kubeconfig(kubeconfig: str | None) -> str | None:
    """The kubeconfig file(s) the hub client loads, in controller-runtime's order: the one
    given, ``$KUBECONFIG`` (files separated by ``:``, merged), then — None — the in-cluster
    service account when ``KUBERNETES_SERVICE_HOST`` is set, then ``~/.kube/config``."""
    if kubeconfig:
        return kubeconfig
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    home = os.path.expanduser(HOME_KUBECONFIG)
    if os.path.isfile(home):
        return home
    raise errors.KubeError(f"no hub kubeconfig: give --kubeconfig, set $KUBECONFIG or write "
                           f"{HOME_KUBECONFIG} (in a pod, its service account is used)")



def current_context(paths: str) -> str | None:
    """kubectl's current-context of a kubeconfig list: the first file's that sets one (the
    loader takes the last's)."""
    for path in paths.split(os.pathsep):
        try:
            with open(os.path.expanduser(path)) as f:
                found = (yaml.safe_load(f) or {}).get("current-context")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if found:
            return str(found)
    return None


Obj = dict[str, Any]
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
DISCOVERY_TTL = 30.0
THROTTLE_PATIENCE = 60.0
"""Seconds a request keeps being sent again while the cluster answers 429."""


def _throttle_wait(state: tenacity.RetryCallState) -> float:
    """The Retry-After of the 429 (capped at 10 s), else 0.1 s doubling up to 2 s."""
    exc = state.outcome.exception() if state.outcome else None
    after: float | None = exc.retry_after if isinstance(exc, errors.Throttled) else None
    if after is not None:
        return min(max(after, 0.0), 10.0)
    return min(2.0, 0.1 * 2.0 ** (state.attempt_number - 1))


USER_AGENT = f"hmls/{__version__}"


@dataclass(frozen=True)
class WatchEvent:
    """One watch event whose object has ``metadata.name`` and ``metadata.resourceVersion``."""

    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: Obj


WATCH_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


def _identified(obj: Any, *, named: bool = True) -> bool:
    """An object the caches can key: a dict whose metadata has a resourceVersion and (unless
    it is a bookmark) a name."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return (isinstance(meta, dict) and isinstance(meta.get("resourceVersion"), str)
            and (isinstance(meta.get("name"), str) or not named))


def _json_object(data: bytes | str) -> Obj:
    """A JSON object from the wire; anything else is a Malformed answer, never a crash."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise errors.Malformed(f"answer is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise errors.Malformed(f"answer is a JSON {type(value).__name__}, not an object")
    return value


def _ssl_context(cfg: Configuration) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, keyfile=cfg.key_file)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _new_configuration() -> Configuration:
    return cast(Configuration, type.__call__(Configuration))  # bypass the shared-default metaclass


class ClusterClient:
    """Typed-outcome API calls to one cluster.

    The connection pool is not capped here: watches hold one connection each for minutes,
    and the writes are bounded per cluster by the reconciler's semaphore."""

    def __init__(self, name: str, cfg: Configuration, *, timeout: float = 15.0,
                 user_agent: str = USER_AGENT) -> None:
        self.name = name
        self.server = str(cfg.host).rstrip("/")
        self._cfg = cfg
        self._proxy = cfg.proxy or None  # only an explicit proxy-url of the hub kubeconfig
        self._server_hostname = cfg.tls_server_name or None
        self._ssl, self._user_agent = _ssl_context(cfg), user_agent
        self._session = self._new_session()
        self._inflight: set[asyncio.Timeout] = set()
        self._watches: set[aiohttp.ClientResponse] = set()
        self._cut = ""  # why every request but a probe's is refused (see ``sever``)
        self._timeout = timeout
        self._discovery: dict[str, tuple[float, dict[str, Resource]]] = {}
        self._discovery_lock = asyncio.Lock()
        self.budget: Budget | None = None
        """How fast requests may go (``hmls.kube.budget``); None: as fast as they come."""
        self.on_throttle: Callable[[], None] | None = None
        """Called for each 429 the cluster answers."""

    @classmethod
    async def from_kubeconfig(cls, name: str, kubeconfig: Obj, *, timeout: float = 15.0
                              ) -> ClusterClient:
        """Build a client from a kubeconfig dict that ``hmls.domain.kubeconfig`` accepted.

        A loader failure (e.g. certificate data that is not a certificate) is a KubeError
        naming only the exception type: its message may quote the kubeconfig."""
        cfg = _new_configuration()
        try:
            await k8s_config.load_kube_config_from_dict(kubeconfig, client_configuration=cfg)
            return cls(name, cfg, timeout=timeout)
        except Exception as exc:
            raise errors.KubeError(f"kubeconfig could not be loaded ({type(exc).__name__})") from None

    @classmethod
    async def for_hub(cls, kubeconfig: str | None, *, context: str | None = None,
                      timeout: float = 15.0, user_agent: str = USER_AGENT) -> ClusterClient:
        """The controller's and the commands' hub client, from the first of (as
        controller-runtime chooses): the kubeconfig file given, ``$KUBECONFIG`` (a list of
        files, merged), the in-cluster service account (its token file is re-read as the
        kubelet rotates it), ``~/.kube/config``; ``context`` picks a context of the
        kubeconfig (default: its current-context). user_agent names the replica in the
        hub's audit log."""
        cfg = _new_configuration()
        path = hub_kubeconfig(kubeconfig)
        if path is None:
            if context:
                raise errors.KubeError(f"--context {context}: in a cluster without a kubeconfig "
                                       "(--kubeconfig, $KUBECONFIG) there is none to pick")
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            try:
                await k8s_config.load_kube_config(
                    config_file=path, client_configuration=cfg,
                    context=context or (current_context(path) if os.pathsep in path else None))
            except k8s_config.ConfigException as exc:
                raise errors.KubeError(f"hub kubeconfig: {exc}") from None
        return cls("hub", cfg, timeout=timeout, user_agent=user_agent)

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0), trust_env=False,
            read_bufsize=2**21, headers={"User-Agent": self._user_agent})

    async def close(self) -> None:
        await self._session.close()

    async def sever(self, why: str) -> None:
        """The cluster was declared unreachable (``why``): everything in flight fails now
        instead of at its timeout, watches included, connections are dropped, and every
        later request fails at once — except the probes (``readyz``, ``version``) — until
        ``restore``."""
        self._cut = why
        now = asyncio.get_running_loop().time()
        for deadline in list(self._inflight):
            deadline.reschedule(now)
        for stream in list(self._watches):  # closing the session does not wake their readers
            stream.content.set_exception(errors.Unreachable(why))
        old, self._session = self._session, self._new_session()
        await old.close()

    def restore(self) -> None:
        """A probe was answered: requests go out again."""
        self._cut = ""

    # ----- raw calls ---------------------------------------------------------------
    async def _call(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """One request within the cluster's budget (a probe goes at once).  A 429 pauses
        every request to the cluster for its Retry-After (else a short backoff) and is sent
        again, for up to ``THROTTLE_PATIENCE`` seconds: backpressure, not a failure."""
        async for attempt in tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception_type(errors.Throttled),
                wait=_throttle_wait, before_sleep=self._throttled,
                stop=tenacity.stop_after_delay(THROTTLE_PATIENCE), reraise=True):
            with attempt:
                if self.budget is not None and not kwargs.get("probe"):
                    await self.budget.take()
                return await self._call_once(method, path, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def _throttled(self, state: tenacity.RetryCallState) -> None:
        """Before a throttled request waits: every other request to the cluster waits too."""
        wait = state.next_action.sleep if state.next_action else 0.0
        if self.budget is not None:
            self.budget.pause(wait)
        if self.on_throttle is not None:
            self.on_throttle()

    async def _call_once(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                         body: Any = None, content_type: str | None = None,
                         timeout: aiohttp.ClientTimeout | float | None = None,
                         impersonate: str | None = None, probe: bool = False
                         ) -> aiohttp.ClientResponse:
        if self._cut and not probe:
            raise errors.Unreachable(self._cut)
        headers = {"Accept": "application/json"}
        if impersonate:
            headers["Impersonate-User"] = impersonate
        data = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            data = json.dumps(body, separators=(",", ":"))
        if "BearerToken" in self._cfg.api_key:
            headers["Authorization"] = await self._cfg.get_api_key_with_prefix("BearerToken")
        if not isinstance(timeout, aiohttp.ClientTimeout):
            timeout = aiohttp.ClientTimeout(total=timeout if timeout is not None else self._timeout)
        try:
            resp = await self._session.request(
                method, self.server + path, params=query, data=data, headers=headers,
                timeout=timeout, proxy=self._proxy, server_hostname=self._server_hostname)
        except Exception as exc:  # every transport failure becomes a typed outcome
            raise errors.translate(exc) from exc
        if not 200 <= resp.status < 300:
            try:
                raw = await resp.read()
            except Exception:
                raw = b""
            finally:
                resp.release()
            raise errors.from_status(resp.status, raw, resp.reason or "",
                                     resp.headers.get("Retry-After"))
        return resp

    async def request(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                      body: Any = None, content_type: str | None = None,
                      impersonate: str | None = None, probe: bool = False) -> Obj:
        """One call; ``impersonate``: the user it is made as (Kubernetes impersonation)."""
        severable = asyncio.timeout(None)  # ``sever`` expires it at once
        try:
            async with severable:
                self._inflight.add(severable)
                resp = await self._call(method, path, query=query, body=body,
                                        content_type=content_type, impersonate=impersonate,
                                        probe=probe)
                try:
                    data = await resp.read()
                except Exception as exc:
                    raise errors.translate(exc) from exc
                finally:
                    resp.release()
        except TimeoutError:
            if not severable.expired():
                raise
            raise errors.Unreachable(f"cluster {self.name} was declared unreachable while "
                                     f"{method} {path} waited") from None
        finally:
            self._inflight.discard(severable)
        return _json_object(data) if data else {}

    async def version(self) -> Obj:
        return await self.request("GET", "/version", probe=True)

    async def readyz(self, *, timeout: float | None = None) -> None:
        """The API server's own verdict on its health; raises KubeError when it is not ready
        (the message names the failing checks) or cannot be reached (within ``timeout``
        seconds, by default the client's)."""
        resp = await self._call("GET", "/readyz", timeout=timeout, probe=True)
        resp.release()

    # ----- discovery ---------------------------------------------------------------
    async def _group_version(self, api_version: str, *, refresh: bool) -> dict[str, Resource]:
        now = time.monotonic()
        cached = self._discovery.get(api_version)
        if cached and not (refresh and now - cached[0] > 1.0) and now - cached[0] < DISCOVERY_TTL:
            return cached[1]
        async with self._discovery_lock:
            cached = self._discovery.get(api_version)
            if cached and time.monotonic() - cached[0] < 1.0:
                return cached[1]
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            try:
                body = await self.request("GET", path)
            except errors.NotFound:
                body = {"resources": []}
            listed = body.get("resources")
            if not isinstance(listed, list):
                raise errors.Malformed(f"discovery of {api_version} has no resources list")
            kinds = {
                str(r["kind"]): Resource(api_version, str(r["kind"]), str(r["name"]),
                                         bool(r.get("namespaced")))
                for r in listed
                if isinstance(r, dict) and r.get("kind") and r.get("name")
                and "/" not in str(r["name"])
            }
            self._discovery[api_version] = (time.monotonic(), kinds)
            return kinds

    async def resource(self, api_version: str, kind: str) -> Resource:
        """Discovery for one kind; a miss re-reads discovery once (a CRD may be new)."""
        found = (await self._group_version(api_version, refresh=False)).get(kind)
        if found is None:
            found = (await self._group_version(api_version, refresh=True)).get(kind)
        if found is None:
            raise errors.UnknownKind(
                f"kind {kind} in apiVersion {api_version} is not served by cluster {self.name}"
                " (is its CRD installed?)")
        return found

    # ----- objects -----------------------------------------------------------------
    async def apply(self, obj: Obj, *, field_manager: str, force: bool = False,
                    resource: Resource | None = None, dry_run: bool = False,
                    impersonate: str | None = None) -> Obj:
        """Server-side apply ``obj`` (complete desired state for this field manager); with
        ``dry_run`` the server answers what it would store and stores nothing."""
        meta = obj["metadata"]
        res = resource or await self.resource(obj["apiVersion"], obj["kind"])
        query = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return await self.request(
            "PATCH", res.path(meta.get("namespace"), meta["name"]), query=query, body=obj,
            content_type=APPLY, impersonate=impersonate)

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self.request("GET", res.path(namespace, name))
        except errors.NotFound:
            return None

    async def delete(self, res: Resource, namespace: str | None, name: str, *,
                     uid: str | None = None, resource_version: str | None = None,
                     impersonate: str | None = None) -> bool:
        """Delete with optional uid / resourceVersion preconditions (a changed object answers
        Conflict); False if it was already gone."""
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version))
                         if v}
        if preconditions:
            body["preconditions"] = preconditions
        try:
            await self.request("DELETE", res.path(namespace, name), body=body,
                               impersonate=impersonate)
        except errors.NotFound:
            return False
        return True

    async def patch(self, res: Resource, namespace: str | None, name: str, patch: Obj, *,
                    subresource: str | None = None, field_manager: str | None = None) -> Obj:
        query = [("fieldManager", field_manager)] if field_manager else None
        return await self.request("PATCH", res.path(namespace, name, subresource), query=query,
                                  body=patch, content_type=MERGE)

    async def create(self, res: Resource, namespace: str | None, obj: Obj, *,
                     field_manager: str | None = None) -> Obj:
        query = [("fieldManager", field_manager)] if field_manager else None
        return await self.request("POST", res.path(namespace), query=query, body=obj)

    async def list(self, res: Resource, *, namespace: str | None = None,
                   label_selector: str | None = None) -> tuple[list[Obj], str]:
        """All items and the list's resourceVersion."""
        items: list[Obj] = []
        rv = ""
        async for page, page_rv in self.pages(res, namespace=namespace,
                                              label_selector=label_selector):
            items.extend(page)
            rv = page_rv
        return items, rv

    async def pages(self, res: Resource, *, namespace: str | None = None,
                    label_selector: str | None = None, limit: int = 500
                    ) -> AsyncIterator[tuple[builtins.list[Obj], str]]:
        """The items ``limit`` at a time, each page with the list's resourceVersion (every
        page of a paginated list is of the same snapshot): a reader that keeps less than
        the objects (an informer's view) never holds a large list whole."""
        token = ""
        while True:
            query = [("limit", str(limit))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = await self.request("GET", res.path(namespace), query=query)
            listed = page.get("items") or []
            meta = page.get("metadata") or {}
            if not isinstance(listed, list) or not isinstance(meta, dict) or not all(
                    _identified(o) for o in listed):
                raise errors.Malformed(f"list of {res.plural} is not a list of objects")
            yield listed, str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or ""
            if not token:
                return

    async def watch(self, res: Resource, *, resource_version: str, namespace: str | None = None,
                    label_selector: str | None = None, timeout_seconds: int = 300,
                    ) -> AsyncIterator[WatchEvent]:
        """One watch request; raises Gone when resource_version is too old."""
        query = [("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", resource_version), ("timeoutSeconds", str(timeout_seconds))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout,
                                        sock_read=timeout_seconds + 30)
        resp = await self._call("GET", res.path(namespace), query=query, timeout=timeout)
        self._watches.add(resp)
        try:
            while True:
                try:
                    line = await resp.content.readline()
                except Exception as exc:
                    raise errors.translate(exc) from exc
                if not line:
                    return
                event = _json_object(line)
                kind, obj = event.get("type"), event.get("object")
                if kind == "ERROR":
                    status = obj if isinstance(obj, dict) else {}
                    code = status.get("code")
                    raise errors.from_status(code if isinstance(code, int) else 500, status)
                if kind not in WATCH_TYPES or not _identified(obj, named=kind != "BOOKMARK"):
                    raise errors.Malformed(f"watch of {res.plural} sent an event without "
                                           "type or object metadata")
                yield WatchEvent(str(kind), cast(Obj, obj))
        finally:
            self._watches.discard(resp)
            resp.release()
