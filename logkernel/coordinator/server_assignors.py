"""Server-side partition assignors of the consumer group protocol (KIP-848).

The group coordinator, not a client, computes a consumer-protocol group's target assignment.
A member names the assignor it prefers (ConsumerGroupHeartbeat's ``ServerAssignor``); the
group uses the one most of its members prefer, else the broker's default. Two exist, as in
Kafka:

- ``uniform``: balance first, then stickiness. Every member gets a number of partitions
  within one of every other member's when all subscribe to the same topics (and as close to
  that as subscriptions allow otherwise); within that, members keep what they have.
- ``range``: per topic, contiguous ranges of partitions over the topic's subscribers in a
  fixed order (static members by instance id first, then the others by member id, as Kafka
  orders them), the first ``partitions % subscribers`` of them one partition larger. Where
  several placements of those larger ranges are possible, the one keeping the most of the
  members' current partitions wins (ties: larger ranges first, Kafka's placement).
  Topics with the same subscribers and partition count are placed together, so members get
  the same partition numbers of each: co-partitioning, which joins over topics rely on.

Both are pure functions of their inputs (iteration orders are sorted), so every coordinator
computes the same assignment from the same group. Neither is rack aware: the engine has one
broker, so every partition has the same (absent) rack.

Inputs, shared by both:
    members: member id -> MemberSpec (subscribed topic names, rack, instance id)
    topics:  topic name -> TopicSpec (topic id, partition count); only existing topics
    current: member id -> topic name -> partitions the member has in the previous target
             (what stickiness preserves; entries for gone topics, partitions beyond a
             topic's count or unsubscribed topics are ignored)
Output: member id -> topic name -> partitions (every member present, empty topics left out).
Invariant (tested): every partition of a topic with at least one subscriber goes to exactly
one of its subscribers; topics nobody subscribes to are not assigned.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ASSIGNORS",
    "Assignment",
    "MemberSpec",
    "RangeAssignor",
    "ServerAssignor",
    "TopicSpec",
    "UniformAssignor",
]


@dataclass(frozen=True)
class MemberSpec:
    """What an assignor knows of a member."""

    subscribed_topics: frozenset[str]
    rack_id: str | None = None
    instance_id: str | None = None


@dataclass(frozen=True)
class TopicSpec:
    """What an assignor knows of a topic: its 16-byte id and partition count."""

    topic_id: bytes
    partitions: int


Assignment = dict[str, dict[str, frozenset[int]]]
CurrentAssignment = Mapping[str, Mapping[str, frozenset[int]]]


class ServerAssignor(Protocol):
    name: str

    def assign(self, members: Mapping[str, MemberSpec], topics: Mapping[str, TopicSpec],
               current: CurrentAssignment) -> Assignment: ...


def _subscriptions(members: Mapping[str, MemberSpec],
                   topics: Mapping[str, TopicSpec]) -> dict[str, frozenset[str]]:
    """Each member's subscribed topics that exist."""
    return {member_id: frozenset(t for t in spec.subscribed_topics if t in topics)
            for member_id, spec in members.items()}


def _kept(subscriptions: Mapping[str, frozenset[str]], topics: Mapping[str, TopicSpec],
          current: CurrentAssignment) -> dict[str, list[tuple[str, int]]]:
    """The partitions of ``current`` each member may keep: subscribed, existing, and not
    claimed by a member earlier in member-id order (a well-formed current never has two
    claims; a malformed one must not produce a double assignment). Sorted (topic, partition)."""
    claimed: set[tuple[str, int]] = set()
    kept: dict[str, list[tuple[str, int]]] = {}
    for member_id in sorted(subscriptions):
        subscribed = subscriptions[member_id]
        mine: list[tuple[str, int]] = []
        for topic, partitions in sorted(current.get(member_id, {}).items()):
            if topic not in subscribed:
                continue
            count = topics[topic].partitions
            for partition in sorted(partitions):
                if 0 <= partition < count and (topic, partition) not in claimed:
                    claimed.add((topic, partition))
                    mine.append((topic, partition))
        kept[member_id] = mine
    return kept


def _freeze(holdings: Mapping[str, Mapping[str, set[int]]]) -> Assignment:
    return {member_id: {topic: frozenset(parts) for topic, parts in by_topic.items() if parts}
            for member_id, by_topic in holdings.items()}


class UniformAssignor:
    """Balanced, then sticky (Kafka's UniformAssignor, its properties rather than its code).

    Homogeneous groups (every member subscribes to the same topics): the ``total % members``
    members holding the most of their current partitions get the one extra partition, each
    member keeps up to its quota of what it has, and the rest is dealt round-robin over the
    members below quota (so a topic's partitions spread over the members). That keeps the
    most partitions in place that any balanced assignment can. O(P + M log M).

    Heterogeneous groups: members keep all their valid current partitions, the unassigned
    ones go (most constrained topics first) to the subscriber with the fewest partitions, and
    then partitions move along chains of subscribers from a member with ``k`` partitions to
    one with ``k - 2`` or fewer until no such chain exists, which minimises the sum of
    squared member sizes (a convex-cost flow is optimal when its residual graph has no
    improving path). Each chain moves as many partitions as it can at once, taking those a
    member did not have before this assignment first. Each move lowers that sum, so it
    ends; a search is O(members x topics), and a few dozen searches usually suffice.
    """

    name = "uniform"

    def assign(self, members: Mapping[str, MemberSpec], topics: Mapping[str, TopicSpec],
               current: CurrentAssignment) -> Assignment:
        if not members:
            return {}
        subscriptions = _subscriptions(members, topics)
        kept = _kept(subscriptions, topics, current)
        if len(set(subscriptions.values())) == 1:
            return self._homogeneous(subscriptions, topics, kept)
        return self._heterogeneous(subscriptions, topics, kept)

    @staticmethod
    def _homogeneous(subscriptions: Mapping[str, frozenset[str]],
                     topics: Mapping[str, TopicSpec],
                     kept: Mapping[str, list[tuple[str, int]]]) -> Assignment:
        subscribed = sorted(next(iter(subscriptions.values())))
        holdings: dict[str, dict[str, set[int]]] = {m: {} for m in subscriptions}
        total = sum(topics[t].partitions for t in subscribed)
        minimum, extra = divmod(total, len(subscriptions))
        # The members holding the most get the larger quotas: keeps the most in place.
        order = sorted(subscriptions, key=lambda m: (-len(kept[m]), m))
        remaining: dict[str, int] = {}
        taken: set[tuple[str, int]] = set()
        for index, member_id in enumerate(order):
            quota = minimum + (1 if index < extra else 0)
            for topic, partition in kept[member_id][:quota]:
                holdings[member_id].setdefault(topic, set()).add(partition)
                taken.add((topic, partition))
            remaining[member_id] = quota - min(quota, len(kept[member_id]))
        unfilled = [m for m in sorted(subscriptions) if remaining[m] > 0]
        position = 0
        for topic in subscribed:
            for partition in range(topics[topic].partitions):
                if (topic, partition) in taken:
                    continue
                # Round-robin over the members below quota; one always has room, as the
                # quotas add up to the partition count.
                while remaining[unfilled[position % len(unfilled)]] == 0:
                    position += 1
                member_id = unfilled[position % len(unfilled)]
                position += 1
                holdings[member_id].setdefault(topic, set()).add(partition)
                remaining[member_id] -= 1
        return _freeze(holdings)

    @staticmethod
    def _heterogeneous(subscriptions: Mapping[str, frozenset[str]],
                       topics: Mapping[str, TopicSpec],
                       kept: Mapping[str, list[tuple[str, int]]]) -> Assignment:
        holdings: dict[str, dict[str, set[int]]] = {m: {} for m in subscriptions}
        count = dict.fromkeys(subscriptions, 0)
        taken: set[tuple[str, int]] = set()
        for member_id, partitions in kept.items():
            for topic, partition in partitions:
                holdings[member_id].setdefault(topic, set()).add(partition)
                taken.add((topic, partition))
            count[member_id] = len(partitions)
        subscribers: dict[str, list[str]] = {}
        for member_id in sorted(subscriptions):
            for topic in subscriptions[member_id]:
                subscribers.setdefault(topic, []).append(member_id)
        fresh: set[tuple[str, str, int]] = set()  # (member, topic, partition) not kept
        # Most constrained topics first: they have the fewest places to go.
        for topic in sorted(subscribers, key=lambda t: (len(subscribers[t]), t)):
            heap = [(count[m], m) for m in subscribers[topic]]
            heapq.heapify(heap)
            for partition in range(topics[topic].partitions):
                if (topic, partition) in taken:
                    continue
                size, member_id = heapq.heappop(heap)
                holdings[member_id].setdefault(topic, set()).add(partition)
                fresh.add((member_id, topic, partition))
                count[member_id] = size + 1
                heapq.heappush(heap, (size + 1, member_id))

        while True:
            path = _improving_path(count, holdings, subscribers)
            if path is None:
                return _freeze(holdings)  # balanced as far as the subscriptions allow
            source, receiver = path[0][0], path[-1][2]
            amount = min(min(len(holdings[giver][topic]) for giver, topic, _ in path),
                         (count[source] - count[receiver]) // 2)
            for giver, topic, taker in path:
                mine = holdings[giver][topic]
                # Give away what the giver did not have before this assignment first.
                moving = sorted(mine, key=lambda p: ((giver, topic, p) in fresh, p))[-amount:]
                for partition in moving:
                    mine.discard(partition)
                    fresh.discard((giver, topic, partition))
                    holdings[taker].setdefault(topic, set()).add(partition)
                    fresh.add((taker, topic, partition))
            count[source] -= amount
            count[receiver] += amount


def _improving_path(count: Mapping[str, int], holdings: Mapping[str, Mapping[str, set[int]]],
                    subscribers: Mapping[str, list[str]]) -> list[tuple[str, str, str]] | None:
    """A chain of moves (giver, topic, receiver) from a member with ``k`` partitions to the
    least loaded member it reaches with at most ``k - 2``, or None if there is none.

    For each size level from the top, one breadth-first search from all members at or above
    it, over member -> topic it holds -> member subscribing to that topic; each topic is
    expanded once, so a search costs O(members x topics they hold + subscriptions)."""
    low = min(count.values())
    for level in sorted(set(count.values()), reverse=True):
        if level - low < 2:
            return None
        sources = sorted((m for m in count if count[m] >= level), key=lambda m: (-count[m], m))
        parent: dict[str, tuple[str, str]] = {}
        seen = set(sources)
        expanded: set[str] = set()
        queue = deque(sources)
        best: str | None = None
        while queue:
            giver = queue.popleft()
            for topic in sorted(t for t, parts in holdings[giver].items() if parts):
                if topic in expanded:
                    continue
                expanded.add(topic)
                for receiver in subscribers[topic]:
                    if receiver in seen:
                        continue
                    seen.add(receiver)
                    parent[receiver] = (giver, topic)
                    queue.append(receiver)
                    if count[receiver] <= level - 2 and (
                            best is None or count[receiver] < count[best]):
                        best = receiver
        if best is not None:
            path: list[tuple[str, str, str]] = []
            node = best
            while node in parent:
                giver, topic = parent[node]
                path.append((giver, topic, node))
                node = giver
            path.reverse()
            return path
    return None


# Once an assignment has searched this many cells (ordered members x possible placements of
# the larger ranges, summed over topics) the range assignor stops placing them stickily and
# uses Kafka's fixed placement for the remaining topics: a cell costs ~1 us of pure Python,
# so this bounds the search to ~0.1 s under the group lock. Only groups of hundreds of
# members with as many leftover partitions per topic reach it.
RANGE_STICKY_SEARCH_LIMIT = 100_000


class RangeAssignor:
    """Contiguous ranges per topic (Kafka's server-side RangeAssignor), sticky where the
    placement of the larger ranges leaves a choice. See the module docstring."""

    name = "range"

    def assign(self, members: Mapping[str, MemberSpec], topics: Mapping[str, TopicSpec],
               current: CurrentAssignment) -> Assignment:
        subscriptions = _subscriptions(members, topics)
        holdings: dict[str, dict[str, set[int]]] = {m: {} for m in members}
        # Kafka's order: static members by instance id, then dynamic ones by member id.
        order = sorted(members, key=lambda m: (0, members[m].instance_id or "", m)
                       if members[m].instance_id is not None else (1, "", m))
        groups: dict[tuple[tuple[str, ...], int], list[str]] = {}
        for topic in sorted(topics):
            subscribers = tuple(m for m in order if topic in subscriptions[m])
            if subscribers:
                groups.setdefault((subscribers, topics[topic].partitions), []).append(topic)
        budget = RANGE_STICKY_SEARCH_LIMIT
        for (subscribers, partitions), group_topics in groups.items():
            extra = partitions % len(subscribers)
            cells = len(subscribers) * (extra + 1)
            sticky = extra > 0 and cells <= budget
            if sticky:
                budget -= cells
            sizes = self._range_sizes(subscribers, partitions, group_topics,
                                      current if sticky else {})
            start = 0
            for member_id, size in zip(subscribers, sizes, strict=True):
                if size:
                    for topic in group_topics:
                        holdings[member_id][topic] = set(range(start, start + size))
                start += size
        return _freeze(holdings)

    @staticmethod
    def _range_sizes(subscribers: tuple[str, ...], partitions: int, group_topics: list[str],
                     current: CurrentAssignment) -> list[int]:
        """Each subscriber's range length, in order: the quota, plus one for ``extra`` of
        them, placed to keep the most current partitions (a dynamic programme over (member,
        larger ranges placed so far))."""
        count = len(subscribers)
        quota, extra = divmod(partitions, count)
        default = [quota + 1] * extra + [quota] * (count - extra)
        if extra == 0:
            return default
        # held[i]: sorted partitions member i has now, once per topic of the group.
        held = [sorted(p for t in group_topics for p in current.get(m, {}).get(t, ())
                       if 0 <= p < partitions) for m in subscribers]
        if not any(held):
            return default

        def overlap(index: int, start: int, length: int) -> int:
            mine = held[index]
            return bisect.bisect_left(mine, start + length) - bisect.bisect_left(mine, start)

        # best[i][k]: most kept partitions for members i.. given k larger ranges before i;
        # -1 where the remaining members cannot take the remaining larger ranges.
        best = [[-1] * (extra + 1) for _ in range(count + 1)]
        best[count][extra] = 0
        for index in range(count - 1, -1, -1):
            row, after = best[index], best[index + 1]
            for placed in range(min(index, extra) + 1):
                for bonus in (1, 0):
                    if placed + bonus <= extra and after[placed + bonus] >= 0:
                        value = after[placed + bonus] + overlap(
                            index, index * quota + placed, quota + bonus)
                        row[placed] = max(row[placed], value)
        sizes: list[int] = []
        placed = 0
        for index in range(count):
            for bonus in (1, 0):  # on a tie the larger range goes first, as in Kafka
                after = best[index + 1]
                if placed + bonus <= extra and after[placed + bonus] >= 0 and (
                        after[placed + bonus]
                        + overlap(index, index * quota + placed, quota + bonus)
                        == best[index][placed]):
                    sizes.append(quota + bonus)
                    placed += bonus
                    break
        return sizes


ASSIGNORS: dict[str, ServerAssignor] = {
    UniformAssignor.name: UniformAssignor(),
    RangeAssignor.name: RangeAssignor(),
}
