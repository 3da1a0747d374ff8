"""Device waits between the amdgpu members of a device group over one HSA system.

Each amdgpu device owns a ``HostQueueSet``. While two or more of them are members of one
hal_core ``DeviceGroup`` and run on the same HSA system (one ``HsaLibrary``: ROCr, or one
software agent shared by every device of its ``soft_gpus`` spec), their sets join one
``WaitDomain``:

* **one last-signal table.** Every set publishes into it, so a wait in device B on a
  semaphore last published by a queue of device A names A's queue and epoch: the
  frontier's proof of the producer. B's queue then waits on A's epoch signal in the
  host queue's tiers (barrier-value or PM4 ``WAIT_REG_MEM64``); the signal record is
  system memory of the shared HSA system, which B's packet processor reads.
  ``HostQueueSet.wait_peers`` is the domain's member set (the permission check of the
  tiers); a set that leaves the group gets a private copy of the table and an empty
  ``wait_peers``, so its waits on the others are deferred in software again.
* **failure.** A queue that faults, or closes with work cancelled, fails the queues of
  every open set of its domains that are stuck behind a device barrier on it
  (``consumer_queues``), as it does for its own set's queues: nothing hangs.
* **signal lifetime.** A barrier B published reads A's epoch signal until B's packet
  processor consumed it, which may be after A closed. A set that joined a domain hands
  its queues' epoch signals to the domain when it closes while another set of the domain
  is still open; the last set of the domain to close destroys them.

Locks: ``WaitDomain._lock`` guards membership and the kept signals; ``join`` / ``leave``
also take the joining set's queue submission locks (the only writers of a last-signal
table) while the table is swapped. Never called with a queue lock held.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host_queue import HostQueue
    from .queue_set import HostQueueSet

__all__ = ["WaitDomain", "consumer_queues", "join_group_waits", "keep_epoch_signal"]


class WaitDomain:
    """The queue sets of one group's amdgpu members over one HSA system (module
    docstring). Thread-safe."""

    def __init__(self, hsa: Any, tracker: Any) -> None:
        self.hsa = hsa
        #: The group's frontier tracker: names the group this domain belongs to.
        self.tracker = tracker
        self.last_signal: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: Sets currently in the group: their queues wait on each other on the device.
        #: Shared by reference as each member's ``wait_peers`` (mutated under ``_lock``).
        self.members: set[HostQueueSet] = set()
        self._open: set[HostQueueSet] = set()  # joined and not closed yet
        self._kept: list[Any] = []  # epoch signals (hsa_signal_t) of closed sets
        self._lock = threading.Lock()

    def join(self, qset: "HostQueueSet") -> None:
        """Make ``qset`` a member: its last-signal entries move into the shared table.
        For a semaphore both tables name, the entry whose producer has yet to signal it on
        the host wins (the race check in ``resolve_waits_by_tier`` must see it; a settled
        entry only proves an older value, which costs at most a deferred wait)."""
        with self._lock:
            with _QueueLocks(qset.queues):
                shared = self.last_signal
                for sem, entry in _items(qset.last_signal):
                    if sem not in shared or entry[0].signalled_epoch < entry[1]:
                        shared[sem] = entry
                qset.last_signal = shared
                self.members.add(qset)
                self._open.add(qset)
                qset.wait_peers = self.members
                qset.wait_domain = self
                if self not in qset.wait_domains:
                    qset.wait_domains.append(self)

    def leave(self, qset: "HostQueueSet") -> None:
        """``qset`` leaves the group: a private copy of the table, no device waits on the
        other sets (those already published stay valid: the domain still counts it open)."""
        with self._lock:
            self.members.discard(qset)
            with _QueueLocks(qset.queues):
                private: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
                for sem, entry in _items(self.last_signal):
                    private[sem] = entry
                qset.last_signal = private
                qset.wait_peers = frozenset()
                if qset.wait_domain is self:
                    qset.wait_domain = None

    def open_queues(self) -> list["HostQueue"]:
        """Every queue of the domain's open sets."""
        with self._lock:
            sets = list(self._open)
        return [q for s in sets for q in s.queues]

    def keep(self, qset: "HostQueueSet", signal: Any) -> bool:
        """Take ``signal`` (an epoch signal of closing ``qset``) when another set of the
        domain is still open and may read it; False: the caller destroys it."""
        with self._lock:
            if not self._open - {qset}:
                return False
            self._kept.append(signal)
            return True

    def closed(self, qset: "HostQueueSet") -> None:
        """``qset`` closed; the last open set destroys the kept signals."""
        with self._lock:
            self.members.discard(qset)
            self._open.discard(qset)
            if self._open:
                return
            kept, self._kept = self._kept, []
        destroy = self.hsa.lib.hsa_signal_destroy
        for signal in kept:
            destroy(signal)


def _items(table: weakref.WeakKeyDictionary) -> list:
    """A snapshot of ``table``'s entries. Another member may insert while it is read
    (a dict changed size during iteration): read again, a few entries only."""
    while True:
        try:
            return list(table.items())
        except RuntimeError:
            continue


class _QueueLocks:
    """Hold every queue's submission lock (in queue order: no other code holds two)."""

    def __init__(self, queues: list) -> None:
        self._locks = [q._lock for q in queues]

    def __enter__(self) -> None:
        for lock in self._locks:
            lock.acquire()

    def __exit__(self, *_exc: object) -> None:
        for lock in reversed(self._locks):
            lock.release()


def join_group_waits(backend: Any, qset: "HostQueueSet", info: Any) -> None:
    """Join ``qset`` (of amdgpu ``backend``) to the wait domain of its group and HSA
    system (``info``: the member's ``TopologyInfo``), creating the domain for the first
    member to join; ``info`` None: leave the current one. Blocking (takes locks)."""
    current = qset.wait_domain
    if info is None:
        if current is not None:
            current.leave(qset)
        return
    domain = None
    for device in info.group.devices:
        other = device.backend
        if other is backend or getattr(other, "hsa", None) is not backend.hsa:
            continue
        peer = getattr(other, "_host_queue_set", None)
        found = None if peer is None else peer.wait_domain
        if found is not None and found.tracker is info.tracker:
            domain = found
            break
    if current is not None and current is not domain:
        current.leave(qset)
    (domain or WaitDomain(backend.hsa, info.tracker)).join(qset)


def consumer_queues(qset: "HostQueueSet") -> list["HostQueue"]:
    """The queues that may hold a device barrier on a queue of ``qset``: its own, and
    those of every open set of the domains it joined."""
    domains = qset.wait_domains
    if not domains:
        return list(qset.queues)
    seen: dict[int, HostQueue] = {id(q): q for q in qset.queues}
    for domain in domains:
        for q in domain.open_queues():
            seen.setdefault(id(q), q)
    return list(seen.values())


def keep_epoch_signal(qset: "HostQueueSet", signal: Any) -> bool:
    """Hand a closing queue's epoch signal to a domain of ``qset`` that another open set
    may still read it from; False when none does (the caller destroys it)."""
    return any(domain.keep(qset, signal) for domain in qset.wait_domains)
