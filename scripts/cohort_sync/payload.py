"""Request bodies for the user cohort endpoint, built from planned changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

MAX_IDENTIFIERS_PER_REQUEST = 1000


class Change(NamedTuple):
    """One row of the cohort_sync_changes model, as the publisher reads it."""

    batch_number: int
    should_remove: bool
    member_key: str
    identifier_type: str
    external_id: str | None
    alias_name: str | None
    alias_label: str | None
    device_id: str | None


def build_cohort_changes(changes: Iterable[Change]) -> list[dict[str, Any]]:
    """The `cohort_changes` array for one request.

    At most two objects: the removes (should_remove true) first, then the
    adds; each holds user_ids, aliases and device_ids, empty lists omitted.
    """
    groups: dict[bool, dict[str, list[Any]]] = {}
    total = 0
    for change in changes:
        group = groups.setdefault(
            bool(change.should_remove), {"user_ids": [], "aliases": [], "device_ids": []}
        )
        if change.identifier_type == "external_id" and change.external_id:
            group["user_ids"].append(change.external_id)
        elif change.identifier_type == "alias" and change.alias_name and change.alias_label:
            group["aliases"].append(
                {"alias_name": change.alias_name, "alias_label": change.alias_label}
            )
        elif change.identifier_type == "device_id" and change.device_id:
            group["device_ids"].append(change.device_id)
        else:
            raise ValueError(
                f"change {change.member_key!r} has no usable {change.identifier_type!r} identifier"
            )
        total += 1
    if total > MAX_IDENTIFIERS_PER_REQUEST:
        raise ValueError(
            f"a request may hold at most {MAX_IDENTIFIERS_PER_REQUEST} identifiers, got {total}"
        )

    objects: list[dict[str, Any]] = []
    for should_remove in (True, False):
        group = groups.get(should_remove)
        if not group:
            continue
        obj: dict[str, Any] = {key: ids for key, ids in group.items() if ids}
        if should_remove:
            obj["should_remove"] = True
        objects.append(obj)
    return objects


def count_changes(changes: Iterable[Change]) -> tuple[int, int]:
    """(adds, removes) among the changes."""
    adds = removes = 0
    for change in changes:
        if change.should_remove:
            removes += 1
        else:
            adds += 1
    return adds, removes
