"""The hub's audit log (``Environment.up(audit=True)``), read back: who wrote which
HyperMLService's status while holding which Lease.

The terms of a Lease are its successful writes in the order the hub served them (the holder
from the request body); a status write belongs to the term current at its completion, and
its writer is the replica identity that hmls puts in its user agent (``hmls/… (identity)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmls.domain.sharding import shard_of
from hmls.kube.leader import lease_name


@dataclass
class Writers:
    terms: int = 0
    """Holder changes over every Lease."""
    status_writes: int = 0
    by_writer: dict[str, int] = field(default_factory=dict)
    outside_term: list[dict[str, Any]] = field(default_factory=list)
    """Status writes by a replica that did not hold the HyperMLService's Lease then."""


def status_writers(audit_log: Path, shards: int = 1, namespace: str | None = None) -> Writers:
    """Every status write (of HyperMLServices in ``namespace`` when given) checked against
    the Lease of its HyperMLService's shard."""
    events = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if int((event.get("responseStatus") or {}).get("code") or 0) < 300:
            events.append(event)
    events.sort(key=lambda e: e["stageTimestamp"])
    holders: dict[str, str] = {}
    out = Writers()
    for e in events:
        ref = e.get("objectRef") or {}
        if ref.get("resource") == "leases":
            new = ((e.get("requestObject") or {}).get("spec") or {}).get("holderIdentity") or ""
            out.terms += new != holders.get(ref.get("name") or "", "")
            holders[ref.get("name") or ""] = new
        elif (ref.get("resource") == "hypermlservices" and ref.get("subresource") == "status"
              and namespace in (None, ref.get("namespace"))):
            out.status_writes += 1
            agent = e.get("userAgent") or ""
            writer = agent[agent.find("(") + 1:agent.rfind(")")] if "(" in agent else agent
            out.by_writer[writer] = out.by_writer.get(writer, 0) + 1
            key = f"{ref.get('namespace')}/{ref.get('name')}"
            governing = lease_name(shard_of(key, shards), shards)
            if writer != holders.get(governing, ""):
                out.outside_term.append({
                    "at": e["stageTimestamp"], "key": key,
                    "detail": f"status written by {writer!r} while "
                              f"{holders.get(governing, '')!r} held Lease {governing}"})
    return out
