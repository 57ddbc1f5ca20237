"""Identity resolution for a group of calls, planned in memory.

Given the profiles that already hold a group's user ids, emails and
anonymous ids, decide for each call which profile it belongs to, which
profiles to create, which anonymous profiles to merge into known ones, and
which aliases to record. The writer then applies the plan in one
transaction and checks that the profiles it read did not change meanwhile.

Rules (in order):
1. A userId finds its profile. An unknown userId adopts the call's
   anonymous (or email-only) profile when that has no user id yet, else a
   new profile is created.
2. Without a userId, an email finds its profile; an unknown email adopts
   the call's anonymous profile, else a new profile is created.
3. With only an anonymousId, its alias finds the profile, else a new
   anonymous profile is created.
4. Another profile that holds the call's email, or the call's anonymous /
   previous id, is merged into the target when it belongs to nobody else
   (no different userId, no different email); otherwise the email stays
   where it is and the anonymous id is re-pointed to the target.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.ids import uuid7
from tracking.items import IngestItem

Key = tuple[uuid.UUID, str]


@dataclass(eq=False, slots=True)
class PlannedProfile:
    """A profile as the plan sees it: loaded from the database or new."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    email: str | None
    external_id: str | None
    is_new: bool
    loaded: tuple[str | None, str | None] | None = None  # (email, external_id) as read
    merged_into: PlannedProfile | None = None
    traits: dict[str, Any] | None = None  # identify traits to merge, in call order
    identity_changed: bool = False


@dataclass(slots=True)
class IdentityPlan:
    """What the writer must do, in this order, inside one transaction."""

    creations: list[PlannedProfile] = field(default_factory=list)
    locks: dict[uuid.UUID, PlannedProfile] = field(default_factory=dict)
    merges: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = field(default_factory=list)  # ws, source, target
    aliases: dict[Key, uuid.UUID] = field(default_factory=dict)
    updates: list[PlannedProfile] = field(default_factory=list)
    seen: dict[uuid.UUID, tuple[datetime, datetime]] = field(default_factory=dict)

    @property
    def only_known_profiles(self) -> bool:
        """True when the group only adds events to existing, unchanged
        profiles: the common case, stored by a single statement."""
        return not (self.creations or self.merges or self.aliases or self.updates)


class IdentityCache:
    """Identity → profile answers of earlier groups, so a steady stream of
    events from known people needs no lookup query. An answer is only a
    hint: the writer locks each profile it uses and checks it still holds
    that email / user id, so a stale entry costs a retry, never a wrong
    write. (An anonymous id re-pointed by another process is followed once
    the entry expires.)"""

    def __init__(self, ttl: float = 60.0, max_entries: int = 200_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._rows: dict[tuple[str, uuid.UUID, str], tuple[float, tuple]] = {}

    def get(self, kind: str, ws: uuid.UUID, key: str, now: float) -> tuple | None:
        """A lookup row (kind, ws, key, profile_id, email, external_id), or None."""
        hit = self._rows.get((kind, ws, key))
        if hit is None or hit[0] < now:
            return None
        return hit[1]

    def put(self, profile: PlannedProfile | None, kind: str, ws: uuid.UUID, key: str, now: float) -> None:
        """Remember where an identity points (or forget it when nowhere)."""
        if profile is None:
            self._rows.pop((kind, ws, key), None)
            return
        if len(self._rows) >= self._max:
            self._rows.clear()
        row = (kind, ws, key, profile.id, profile.email, profile.external_id)
        self._rows[(kind, ws, key)] = (now + self._ttl, row)

    def forget(self, kind: str, ws: uuid.UUID, key: str) -> None:
        """Drop one entry."""
        self._rows.pop((kind, ws, key), None)


def _root(profile: PlannedProfile | None) -> PlannedProfile | None:
    while profile is not None and profile.merged_into is not None:
        profile = profile.merged_into
    return profile


class IdentityPlanner:
    """Builds an `IdentityPlan` from lookup rows and a sequence of items."""

    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        # rows: (kind 'u'|'e'|'a', workspace_id, key, profile_id, email, external_id)
        self._by_id: dict[uuid.UUID, PlannedProfile] = {}
        self._ext: dict[Key, PlannedProfile] = {}
        self._email: dict[Key, PlannedProfile] = {}
        self._anon: dict[Key, PlannedProfile] = {}
        self._created: list[PlannedProfile] = []
        self._merges: list[tuple[PlannedProfile, PlannedProfile]] = []
        self._aliases: dict[Key, PlannedProfile] = {}
        for kind, ws, key, pid, stored_email, ext in rows:
            email = stored_email.lower() if stored_email else None
            profile = self._by_id.get(pid)
            if profile is None:
                profile = PlannedProfile(pid, ws, email, ext, is_new=False, loaded=(email, ext))
                self._by_id[pid] = profile
                if ext is not None:
                    self._ext[(ws, ext)] = profile
                if email is not None:
                    self._email[(ws, email)] = profile
            if kind == "a":
                self._anon[(ws, key)] = profile

    # -- state changes -------------------------------------------------

    def _create(self, ws: uuid.UUID) -> PlannedProfile:
        profile = PlannedProfile(uuid7(), ws, None, None, is_new=True)
        self._created.append(profile)
        return profile

    def _set_email(self, profile: PlannedProfile, email: str) -> None:
        ws = profile.workspace_id
        if profile.email is not None and self._email.get((ws, profile.email)) is profile:
            del self._email[(ws, profile.email)]
        profile.email = email
        profile.identity_changed = True
        self._email[(ws, email)] = profile

    def _set_external_id(self, profile: PlannedProfile, external_id: str) -> None:
        profile.external_id = external_id
        profile.identity_changed = True
        self._ext[(profile.workspace_id, external_id)] = profile

    def _merge(self, source: PlannedProfile, target: PlannedProfile) -> None:
        source.merged_into = target
        if source.traits:
            target.traits = {**source.traits, **(target.traits or {})}
        if target.external_id is None and source.external_id is not None:
            self._set_external_id(target, source.external_id)
        if target.email is None and source.email is not None:
            self._set_email(target, source.email)
        if not source.is_new:
            self._merges.append((source, target))

    @staticmethod
    def _mergeable(source: PlannedProfile, target: PlannedProfile) -> bool:
        return source.external_id in (None, target.external_id) and (
            source.email is None or target.email is None or source.email == target.email
        )

    # -- one call --------------------------------------------------------

    def assign(self, item: IngestItem) -> PlannedProfile:
        """Decide the profile of one item, updating the plan's state."""
        ws, uid, email = item.workspace_id, item.user_id, item.email
        anon_keys = [item.anonymous_id] if item.anonymous_id else []
        if item.previous_id and item.previous_id != uid:
            former = _root(self._ext.get((ws, item.previous_id)))
            if former is None:
                anon_keys.append(item.previous_id)
            else:
                # alias(previousId=old user id, userId=new): the same person.
                current = _root(self._ext.get((ws, uid))) if uid else None
                if current is None and uid:
                    self._ext.pop((ws, item.previous_id), None)
                    self._set_external_id(former, uid)
                elif current is not None and current is not former:
                    self._merge(former, current)

        pu = _root(self._ext.get((ws, uid))) if uid else None
        pe = _root(self._email.get((ws, email))) if email else None
        anon = [(key, _root(self._anon.get((ws, key)))) for key in anon_keys]
        pa = next((p for _, p in anon if p is not None), None)

        target = pu
        if target is None and uid:
            for candidate in (pa, pe):
                if candidate is not None and candidate.external_id is None:
                    target = candidate
                    break
            else:
                target = self._create(ws)
            self._set_external_id(target, uid)
        if target is None and email:
            target = pe
            if target is None:
                adoptable = pa is not None and pa.email is None and pa.external_id is None
                target = pa if adoptable else self._create(ws)
        if target is None:
            target = pa if pa is not None else self._create(ws)

        if email and target.email != email:
            pe = _root(pe)
            if pe is not None and pe is not target:
                if pe.external_id in (None, target.external_id):
                    self._merge(pe, target)
                    self._set_email(target, email)
                # else: the email belongs to another known person; it stays there.
            else:
                self._set_email(target, email)

        for key, device in anon:
            other = _root(device)
            if other is target:
                continue
            if other is not None and self._mergeable(other, target):
                self._merge(other, target)
            else:
                # New device, or one that belonged to someone else: it is target's now.
                self._aliases[(ws, key)] = target
                self._anon[(ws, key)] = target

        if item.traits:
            target.traits = {**(target.traits or {}), **item.traits}
        return target

    # -- the result ------------------------------------------------------

    def resolve(self, kind: str, ws: uuid.UUID, key: str) -> PlannedProfile | None:
        """Where an identity points once the plan is applied (for caching)."""
        table = {"u": self._ext, "e": self._email, "a": self._anon}[kind]
        return _root(table.get((ws, key)))

    def plan(self, items: Sequence[IngestItem]) -> IdentityPlan:
        """Assign every item, then collect the plan. Sets `item.profile_id`."""
        assigned = [self.assign(item) for item in items]
        result = IdentityPlan()
        for item, profile in zip(items, assigned, strict=True):
            root = _root(profile)
            assert root is not None
            item.profile_id = root.id
            # An event stamped ahead of its receipt (client clock skew) must
            # not put first_seen / last_seen in the future.
            at = item.occurred_at if item.occurred_at <= item.received_at else item.received_at
            lo, hi = result.seen.get(root.id, (at, at))
            result.seen[root.id] = (min(lo, at), max(hi, at))
        result.creations = [p for p in self._created if p.merged_into is None]
        for source, target in self._merges:
            result.locks[source.id] = source
            final = _root(target)
            assert final is not None
            # Merge straight into the final profile: an intermediate one may
            # itself be merged (or, if new, never created).
            result.merges.append((source.workspace_id, source.id, final.id))
        for pid in result.seen:
            profile = self._by_id.get(pid)
            if profile is not None:
                result.locks[pid] = profile
        for profile in list(result.locks.values()):
            target = _root(profile)
            if target is not None and not target.is_new:
                result.locks.setdefault(target.id, target)
        result.aliases = {key: _root(p).id for key, p in self._aliases.items()}  # type: ignore[union-attr]
        result.updates = [
            p for p in self._by_id.values() if p.merged_into is None and (p.identity_changed or p.traits)
        ]
        return result
