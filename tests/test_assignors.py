"""The consumer protocol codecs and the client-side assignors (logkernel/coordinator/assignors.py).

Codecs:
- decode(encode(x, v)) == x (less the fields version v lacks), for every version;
- our bytes are kafka-python's, byte for byte, for every version it encodes;
- every truncation of a valid buffer, and garbled counts, lengths and UTF-8, raise
  MalformedProtocolError (never IndexError or struct.error); random bytes raise nothing else;
- newer versions with trailing bytes decode; an empty assignment is empty.

Assignors:
- the examples of Kafka's javadoc, and kafka-python's range and roundrobin as references;
- properties for all three (validity, completeness for range/roundrobin, determinism);
- cooperative-sticky over simulated rebalances: nothing is handed over while its owner still
  holds it; two quiet rounds assign everything, balanced (three, rarely, with unequal
  subscriptions); staying members lose only what balance needs, with equal subscriptions
  the fewest possible.
"""

from __future__ import annotations

import contextlib
import struct
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkernel import errors
from logkernel.coordinator import assignors as a
from logkernel.coordinator.assignors import (
    ASSIGNORS,
    Assignment,
    CooperativeStickyAssignor,
    MalformedProtocolError,
    Member,
    RangeAssignor,
    RoundRobinAssignor,
    Subscription,
    assignor_for,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)

kafka_metadata = pytest.importorskip("kafka.protocol.consumer.metadata")
kafka_old = pytest.importorskip("kafka.protocol.old.consumer_protocol")
kafka_range = pytest.importorskip("kafka.coordinator.assignors.range")
kafka_roundrobin = pytest.importorskip("kafka.coordinator.assignors.roundrobin")
kafka_sticky_user_data = pytest.importorskip("kafka.coordinator.assignors.sticky.user_data")
KafkaSubscription = kafka_metadata.ConsumerProtocolSubscription
KafkaAssignment = kafka_metadata.ConsumerProtocolAssignment

INT32 = st.integers(-(2**31), 2**31 - 1)
names = st.text(max_size=12)  # any Unicode: the codec's strings are UTF-8
nullable_bytes = st.none() | st.binary(max_size=40)


@st.composite
def grouped_partitions(draw: st.DrawFn) -> list[tuple[str, int]]:
    """(topic, partition) pairs grouped by topic, as the wire holds them."""
    topics = draw(st.lists(names, unique=True, max_size=4))
    return [(topic, p) for topic in topics for p in draw(st.lists(INT32, max_size=5))]


subscriptions = st.builds(
    Subscription, topics=st.lists(names, max_size=6), user_data=nullable_bytes,
    owned_partitions=grouped_partitions(), generation_id=INT32, rack_id=st.none() | names)
assignments = st.builds(Assignment, partitions=grouped_partitions(), user_data=nullable_bytes)
VERSIONS = st.integers(0, 3)
# The slowest properties run a quarter of the profile's examples (50 by default, more under
# `make test-thorough`) to keep this file near 5 s.
FEWER = settings(max_examples=max(25, settings.default.max_examples // 4))


def as_of_version(sub: Subscription, version: int) -> Subscription:
    """What survives encoding at ``version``: newer fields take their defaults."""
    return Subscription(sub.topics, sub.user_data,
                        sub.owned_partitions if version >= 1 else [],
                        sub.generation_id if version >= 2 else -1,
                        sub.rack_id if version >= 3 else None)


def by_topic(partitions: list[tuple[str, int]]) -> list[tuple[str, list[int]]]:
    grouped: dict[str, list[int]] = {}
    for topic, p in partitions:
        grouped.setdefault(topic, []).append(p)
    return list(grouped.items())


def kafka_python_subscription(sub: Subscription, version: int) -> bytes:
    fields: dict = {"version": version, "topics": sub.topics, "user_data": sub.user_data}
    if version >= 1:
        fields["owned_partitions"] = by_topic(sub.owned_partitions)
    if version >= 2:
        fields["generation_id"] = sub.generation_id
    if version >= 3:
        fields["rack_id"] = sub.rack_id
    return bytes(KafkaSubscription(**fields).encode())


# ---- codecs -------------------------------------------------------------------------------


def test_known_answer_subscription_v3() -> None:
    sub = Subscription(["a", "bb"], b"xy", [("a", 1), ("a", 2)], 7, "r1")
    expected = bytes.fromhex(
        "0003"                      # version 3
        "00000002" "0001" "61" "0002" "6262"   # topics ["a", "bb"]
        "00000002" "7879"           # user_data b"xy"
        "00000001" "0001" "61" "00000002" "00000001" "00000002"  # owned [a: 1, 2]
        "00000007"                  # generation_id
        "0002" "7231")              # rack_id "r1"
    assert encode_subscription(sub) == expected
    assert decode_subscription(expected) == sub


def test_known_answer_assignment_v0_with_null_user_data() -> None:
    data = bytes.fromhex("0000" "00000001" "0001" "61" "00000002" "00000000" "00000001" "ffffffff")
    assert encode_assignment(Assignment([("a", 0), ("a", 1)]), version=0) == data
    assert decode_assignment(data) == Assignment([("a", 0), ("a", 1)], None)


@given(subscriptions, VERSIONS)
def test_subscription_codec(sub: Subscription, version: int) -> None:
    data = encode_subscription(sub, version)
    assert decode_subscription(data) == as_of_version(sub, version)
    # kafka-python writes the same bytes...
    assert data == kafka_python_subscription(sub, version)
    if version == 0:
        old = kafka_old.ConsumerProtocolMemberMetadata_v0(0, sub.topics, sub.user_data)
        assert data == bytes(old.encode())
    # ...and reads ours
    theirs = KafkaSubscription.decode(data)
    assert (list(theirs.topics), theirs.user_data) == (sub.topics, sub.user_data)
    if version >= 1:
        owned = [(tp.topic, p) for tp in theirs.owned_partitions for p in tp.partitions]
        assert owned == sub.owned_partitions
    # every truncation is malformed
    for end in range(len(data)):
        with pytest.raises(MalformedProtocolError):
            decode_subscription(data[:end])


@given(assignments, VERSIONS)
def test_assignment_codec(assignment: Assignment, version: int) -> None:
    data = encode_assignment(assignment, version)
    assert decode_assignment(data) == assignment
    theirs = KafkaAssignment(version=version, assigned_partitions=by_topic(assignment.partitions),
                             user_data=assignment.user_data)
    assert data == bytes(theirs.encode())
    if version == 0:
        old = kafka_old.ConsumerProtocolMemberAssignment_v0(0, by_topic(assignment.partitions),
                                                            assignment.user_data)
        assert data == bytes(old.encode())
    assert KafkaAssignment.decode(data).partitions() == assignment.partitions
    # every truncation but the empty one (an empty assignment) is malformed
    assert decode_assignment(b"") == Assignment([])
    for end in range(1, len(data)):
        with pytest.raises(MalformedProtocolError):
            decode_assignment(data[:end])


def test_encoder_groups_owned_partitions_by_topic() -> None:
    sub = Subscription(["a", "b"], owned_partitions=[("b", 1), ("a", 0), ("b", 0)])
    assert decode_subscription(encode_subscription(sub)).owned_partitions == [
        ("b", 1), ("b", 0), ("a", 0)]


@FEWER
@given(subscriptions, assignments, st.integers(4, 32767), st.binary(min_size=1, max_size=20))
def test_newer_versions_decode_as_v3(sub: Subscription, assignment: Assignment, version: int,
                                     extra: bytes) -> None:
    data = struct.pack(">h", version) + encode_subscription(sub, 3)[2:] + extra
    assert decode_subscription(data) == sub
    data = struct.pack(">h", version) + encode_assignment(assignment, 3)[2:] + extra
    assert decode_assignment(data) == assignment


def test_trailing_bytes_after_a_known_version_are_ignored_as_kafka_does() -> None:
    sub = Subscription(["t"], None, [("t", 0)])
    assert decode_subscription(encode_subscription(sub, 1) + b"\x00\x00\x00\x05") == sub


@pytest.mark.parametrize(("data", "field", "position"), [
    (b"", "version", 0),
    (b"\xff\xfe", "version", 0),                                   # negative version
    (b"\x00\x00" + b"\xff\xff\xff\xff", "topics count", 2),        # topics is not nullable
    (b"\x00\x00" + b"\xff\xff\xff\xfe", "topics count", 2),
    (b"\x00\x00" + b"\x7f\xff\xff\xff", "topics count", 2),        # far more than the bytes
    (b"\x00\x00" + b"\x00\x00\x00\x01" + b"\xff\xff", "topics[0]", 6),  # null topic name
    (b"\x00\x00" + b"\x00\x00\x00\x01" + b"\x00\x01\xff" + b"\xff\xff\xff\xff", "topics[0]", 8),
    (b"\x00\x00" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xfe", "user_data", 6),
    (b"\x00\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x09ab", "user_data", 10),
    (b"\x00\x01" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x01\x00\x01t"
     + b"\xff\xff\xff\xff", "owned_partitions[0].partitions count", 17),
    (b"\x00\x03" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x00"
     + b"\x00\x00\x00\x01" + b"\xff\xfe", "rack_id", 18),
])
def test_garbled_subscriptions_name_the_field_and_position(data: bytes, field: str,
                                                           position: int) -> None:
    with pytest.raises(MalformedProtocolError) as caught:
        decode_subscription(data)
    assert caught.value.field == field
    assert caught.value.position == position
    assert field in str(caught.value)
    assert f"byte {position}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_null_user_data_and_rack_id_are_none() -> None:
    data = b"\x00\x03" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x00" \
        + b"\x00\x00\x00\x02" + b"\xff\xff"
    assert decode_subscription(data) == Subscription([], None, [], 2, None)


@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_malformed_only(data: bytes) -> None:
    for decode in (decode_subscription, decode_assignment):
        with contextlib.suppress(MalformedProtocolError):
            decode(data)


def test_encoder_rejects_what_the_wire_cannot_hold() -> None:
    with pytest.raises(ValueError, match="version"):
        encode_subscription(Subscription([]), version=4)
    with pytest.raises(ValueError, match="int32"):
        encode_assignment(Assignment([("t", 2**31)]))
    with pytest.raises(ValueError, match="32767"):
        encode_subscription(Subscription(["x" * 40000]))


def test_kafka_python_cooperative_sticky_metadata_decodes() -> None:
    cooperative = pytest.importorskip("kafka.coordinator.assignors.cooperative_sticky")
    data = bytes(cooperative.CooperativeStickyAssignor().metadata(["b", "a"]).encode())
    assert data == bytes.fromhex("0001" "00000002" "000161" "000162" "00000000" "00000000")
    assert decode_subscription(data) == Subscription(["a", "b"], b"", [], -1, None)


def test_generation_from_every_client_layout() -> None:
    assert a.generation_of(Subscription(["t"], generation_id=9)) == 9
    # Java's CooperativeStickyAssignor, subscription v1: user data is the int32 generation
    assert a.generation_of(Subscription(["t"], user_data=struct.pack(">i", 4))) == 4
    # librdkafka: StickyAssignorUserData v1 (as Java's, no version prefix)
    user_data = kafka_sticky_user_data.StickyAssignorUserData([("t", [0, 1])], 6).encode(header=False)
    assert a.generation_of(Subscription(["t"], user_data=bytes(user_data))) == 6
    # kafka-python's cooperative-sticky sends empty user data; garbage is unknown too
    assert a.generation_of(Subscription(["t"], user_data=b"")) == -1
    assert a.generation_of(Subscription(["t"], user_data=b"\x01\x02\x03")) == -1
    assert a.generation_of(Subscription(["t"])) == -1


# ---- assignors: examples and references ------------------------------------------------


def members_of(subscriptions: dict[str, list[str]], **instance_ids: str) -> dict[str, Member]:
    return {m: Member(m, Subscription(topics), instance_ids.get(m))
            for m, topics in subscriptions.items()}


def test_range_javadoc_example() -> None:
    members = members_of({"C0": ["t0", "t1"], "C1": ["t0", "t1"]})
    assert RangeAssignor().assign(members, {"t0": 3, "t1": 3}) == {
        "C0": [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)],
        "C1": [("t0", 2), ("t1", 2)]}


def test_roundrobin_javadoc_examples() -> None:
    members = members_of({"C0": ["t0", "t1"], "C1": ["t0", "t1"]})
    assert RoundRobinAssignor().assign(members, {"t0": 3, "t1": 3}) == {
        "C0": [("t0", 0), ("t0", 2), ("t1", 1)],
        "C1": [("t0", 1), ("t1", 0), ("t1", 2)]}
    members = members_of({"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]})
    assert RoundRobinAssignor().assign(members, {"t0": 1, "t1": 2, "t2": 3}) == {
        "C0": [("t0", 0)],
        "C1": [("t1", 0)],
        "C2": [("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]}


def test_static_members_come_first_by_instance_id() -> None:
    members = members_of({"a": ["t"], "b": ["t"], "c": ["t"]}, c="i-1", b="i-2")
    assert RangeAssignor().assign(members, {"t": 3}) == {
        "c": [("t", 0)], "b": [("t", 1)], "a": [("t", 2)]}
    assert RoundRobinAssignor().assign(members, {"t": 4}) == {
        "c": [("t", 0), ("t", 3)], "b": [("t", 1)], "a": [("t", 2)]}


def test_unknown_topics_and_empty_groups() -> None:
    members = members_of({"m": ["gone", "t"], "idle": []})
    for assignor in (RangeAssignor(), RoundRobinAssignor(), CooperativeStickyAssignor()):
        assert assignor.assign(members, {"t": 2, "other": 3}) == {
            "m": [("t", 0), ("t", 1)], "idle": []}
        assert assignor.assign({}, {"t": 2}) == {}


def test_assignor_registry() -> None:
    for name, cls in ASSIGNORS.items():
        assignor = assignor_for(name)
        assert isinstance(assignor, cls)
        assert assignor.name == name
    assert assignor_for("range").rebalance_protocol == "EAGER"
    assert assignor_for("roundrobin").rebalance_protocol == "EAGER"
    assert assignor_for("cooperative-sticky").rebalance_protocol == "COOPERATIVE"
    with pytest.raises(errors.UnsupportedAssignorError, match="cooperative-sticky, range, roundrobin"):
        assignor_for("sticky")


TOPICS = ["t0", "t1", "t2", "t3", "t4"]


@st.composite
def groups(draw: st.DrawFn, equal: bool = False) -> tuple[dict[str, Member], dict[str, int]]:
    """1-12 members, 1-5 topics of 1-20 partitions; subscriptions random (or all equal),
    sometimes naming a topic that does not exist; some members static. (Few, cheap draws:
    generating examples is most of this file's time.)"""
    n_topics = draw(st.integers(1, 5))
    partitions = {t: draw(st.integers(1, 20)) for t in TOPICS[:n_topics]}
    subscribable = [*partitions, "missing"]
    subsets = st.integers(1, 2 ** len(subscribable) - 1).map(
        lambda mask: [t for i, t in enumerate(subscribable) if mask >> i & 1])
    shared = draw(subsets)
    numbers = draw(st.lists(st.integers(0, 99), min_size=1, max_size=12, unique=True))
    members = {}
    for number in numbers:
        member_id = f"member-{number}"
        instance = draw(st.integers(0, 8))  # 1-4: a static member (the ids may even clash)
        topics = shared if equal else draw(subsets)
        members[member_id] = Member(member_id, Subscription(list(topics)),
                                    f"static-{instance}" if 1 <= instance <= 4 else None)
    return members, partitions


def check_valid(members: dict[str, Member], partitions: dict[str, int],
                result: dict[str, list[tuple[str, int]]]) -> None:
    assert set(result) == set(members)
    seen: set[tuple[str, int]] = set()
    for member_id, assigned in result.items():
        assert assigned == sorted(set(assigned))
        for topic, p in assigned:
            assert topic in members[member_id].subscription.topics
            assert 0 <= p < partitions[topic]
            assert (topic, p) not in seen
            seen.add((topic, p))


def subscribed_partitions(members: dict[str, Member], partitions: dict[str, int]) -> set:
    topics = {t for m in members.values() for t in m.subscription.topics if t in partitions}
    return {(t, p) for t in topics for p in range(partitions[t])}


def assigned(result: dict[str, list[tuple[str, int]]]) -> set:
    return {tp for tps in result.values() for tp in tps}


@given(group=groups())
def test_assignment_properties(group: tuple) -> None:
    members, partitions = group
    for assignor in (RangeAssignor(), RoundRobinAssignor(), CooperativeStickyAssignor()):
        result = assignor.assign(members, partitions)
        check_valid(members, partitions, result)
        # complete on a first join (cooperative-sticky holds nothing back when nothing is owned)
        assert assigned(result) == subscribed_partitions(members, partitions)
        # deterministic, whatever order the members arrive in
        assert assignor.assign(dict(reversed(members.items())), partitions) == result
    # range as kafka-python assigns it (dynamic members: its static ordering is not Java's
    # when static and dynamic members interleave)
    dynamic = {m: Member(m, member.subscription) for m, member in members.items()}
    assert RangeAssignor().assign(dynamic, partitions) == kafka_python_assign(
        kafka_range.RangePartitionAssignor, dynamic, partitions)


def kafka_python_assign(assignor: type, members: dict[str, Member],
                        partitions: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    cluster = SimpleNamespace(partitions_for_topic=lambda t: set(range(partitions[t]))
                              if t in partitions else None)
    joined = [SimpleNamespace(member_id=m.member_id, group_instance_id=None,
                              metadata=SimpleNamespace(topics=m.subscription.topics))
              for m in members.values()]
    return {member_id: sorted((t, p) for t, ps in assignment.assigned_partitions for p in ps)
            for member_id, assignment in assignor.assign(cluster, joined).items()}


@FEWER
@given(group=groups(equal=True))
def test_range_and_roundrobin_with_equal_subscriptions(group: tuple) -> None:
    members, partitions = group
    # roundrobin as kafka-python assigns it: equal subscriptions only, as kafka-python
    # 3.0.12's loop that skips unsubscribed members rebinds member_id to a pair (KeyError)
    dynamic = {m: Member(m, member.subscription) for m, member in members.items()}
    assert RoundRobinAssignor().assign(dynamic, partitions) == kafka_python_assign(
        kafka_roundrobin.RoundRobinPartitionAssignor, dynamic, partitions)
    loads = [len(v) for v in RoundRobinAssignor().assign(members, partitions).values()]
    assert max(loads) - min(loads) <= 1
    ranges = RangeAssignor().assign(members, partitions)
    for topic in partitions:
        per_topic = [sum(1 for t, _ in v if t == topic) for v in ranges.values()]
        if topic in next(iter(members.values())).subscription.topics:
            assert max(per_topic) - min(per_topic) <= 1


# ---- cooperative-sticky over rebalances -----------------------------------------------------


def locally_balanced(members: dict[str, Member], result: dict) -> bool:
    """No member holds a partition while another subscriber of its topic has two fewer."""
    load = {m: len(v) for m, v in result.items()}
    for member_id, tps in result.items():
        for topic in {t for t, _ in tps}:
            for other, member in members.items():
                if topic in member.subscription.topics and load[member_id] - load[other] >= 2:
                    return False
    return True


def valid_owned(member: Member, partitions: dict[str, int]) -> set:
    return {(t, p) for t, p in member.subscription.owned_partitions
            if t in member.subscription.topics and t in partitions and p < partitions[t]}


class Group:
    """A simulated group: members rejoin with what they own and the generation they got it in."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions
        self.members: dict[str, Member] = {}
        self.generation = 0
        self.assignor = CooperativeStickyAssignor()

    def join(self, member_id: str, topics: list[str]) -> None:
        self.members[member_id] = Member(member_id, Subscription(topics))

    def resubscribe(self, member_id: str, topics: list[str]) -> None:
        self.members[member_id].subscription.topics = topics

    def leave(self, member_id: str) -> None:
        del self.members[member_id]

    def rebalance(self) -> dict[str, list[tuple[str, int]]]:
        members = self.members
        result = self.assignor.assign(members, self.partitions)
        check_valid(members, self.partitions, result)
        owner = {tp: m for m, member in members.items() for tp in member.subscription.owned_partitions}
        for member_id, tps in result.items():
            for tp in tps:  # the cooperative rule: nothing handed over while still owned
                assert owner.get(tp, member_id) == member_id, (tp, member_id, owner[tp])
        self.check_sticky(result)
        self.generation += 1
        for member_id, member in members.items():
            member.subscription = Subscription(member.subscription.topics,
                                               owned_partitions=list(result[member_id]),
                                               generation_id=self.generation)
        return result

    def check_sticky(self, result: dict) -> None:
        """The target (before the cooperative rule) takes a valid owned partition from a member
        only if giving it back would unbalance the pair; with equal subscriptions the number
        taken is the fewest any balanced assignment could."""
        target = self.assignor.target(self.members, self.partitions)
        load = {m: len(v) for m, v in target.items()}
        holder = {tp: m for m, tps in target.items() for tp in tps}
        lost = 0
        owned_counts = []
        for member_id, member in self.members.items():
            owned = valid_owned(member, self.partitions)
            owned_counts.append(len(owned))
            for tp in owned - set(target[member_id]):
                lost += 1
                assert load[member_id] >= load[holder[tp]], (member_id, tp, holder[tp])
        topic_sets = {tuple(sorted(m.subscription.topics)) for m in self.members.values()}
        if len(topic_sets) == 1:
            total = len(subscribed_partitions(self.members, self.partitions))
            floor, extra = divmod(total, len(self.members))
            above = [c for c in owned_counts if c > floor]
            assert lost == sum(c - floor for c in above) - min(extra, len(above))


Scenario = tuple[dict[str, int], dict[str, list[str]], list[tuple[str, str, int, list[str]]]]


@st.composite
def scenarios(draw: st.DrawFn, equal: bool) -> Scenario:
    """(partitions, the first members' subscriptions, events); an event is (join | leave |
    resubscribe, id of a joiner, which member leaves or resubscribes, the topics)."""
    members, partitions = draw(groups(equal=equal))
    shared = next(iter(members.values())).subscription.topics
    subscribable = [*partitions, "missing"]
    topic_sets = st.just(shared) if equal else st.integers(1, 2 ** len(subscribable) - 1).map(
        lambda mask: [t for i, t in enumerate(subscribable) if mask >> i & 1])
    events = []
    for step in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["join", "leave", "resubscribe"] if not equal
                                    else ["join", "leave"]))
        # a joiner's id sorts anywhere among the members'
        events.append((kind, f"member-{draw(st.integers(0, 99))}-{step}",
                       draw(st.integers(0, 11)), list(draw(topic_sets))))
    return partitions, {m: member.subscription.topics for m, member in members.items()}, events


def run_scenario(scenario: Scenario, quiet_rounds_needed: int) -> Group:
    partitions, initial, events = scenario
    group = Group(partitions)
    for member_id, topics in initial.items():
        group.join(member_id, list(topics))
    group.rebalance()
    for kind, member_id, pick, topics in events:
        present = sorted(group.members)
        if kind == "join":
            group.join(member_id, list(topics))
        elif kind == "leave" and len(present) > 1:
            group.leave(present[pick % len(present)])
        elif kind == "resubscribe":
            group.resubscribe(present[pick % len(present)], list(topics))
        for _ in range(quiet_rounds_needed):
            result = group.rebalance()
        assert assigned(result) == subscribed_partitions(group.members, group.partitions)
        assert locally_balanced(group.members, result)
        # and then it stays put
        assert group.rebalance() == result
    return group


@FEWER
@given(scenarios(equal=True))
def test_cooperative_sticky_equal_subscriptions_settle_in_two_rounds(scenario: Scenario) -> None:
    group = run_scenario(scenario, quiet_rounds_needed=2)
    loads = [len(m.subscription.owned_partitions) for m in group.members.values()]
    assert max(loads) - min(loads) <= 1


@FEWER
@given(scenarios(equal=False))
def test_cooperative_sticky_any_subscriptions_settle_in_three_rounds(scenario: Scenario) -> None:
    # Two almost always (the leader's look-ahead); a targeted search finds rare cases of three.
    run_scenario(scenario, quiet_rounds_needed=3)


@pytest.mark.parametrize(("plans", "rounds"), [(1, 3), (a.LOOKAHEAD_PLANS, 2)])
def test_look_ahead_saves_a_round(monkeypatch: pytest.MonkeyPatch, plans: int, rounds: int) -> None:
    # member-2 moves from t0 to t2: t0-0 and three of member-1's t2 partitions must move. The
    # next round's greedy fill puts t0-0 on member-1 (not member-4, as planned), and a t2
    # partition must move again, unless the leader planned for that round.
    monkeypatch.setattr(a, "LOOKAHEAD_PLANS", plans)
    partitions = {"t0": 1, "t1": 1, "t2": 7, "t3": 8}
    group = Group(partitions)
    for member_id, topics in {"member-0": ["t1"], "member-1": ["t0", "t2"], "member-2": ["t0"],
                              "member-3": ["t3"], "member-4": ["t0", "t3"]}.items():
        group.join(member_id, topics)
    group.rebalance()
    group.resubscribe("member-2", ["t2"])
    for _ in range(rounds - 1):
        assert assigned(group.rebalance()) != subscribed_partitions(group.members, partitions)
    assert assigned(group.rebalance()) == subscribed_partitions(group.members, partitions)


def test_cooperative_sticky_holds_back_what_moves() -> None:
    group = Group({"t": 6})
    group.join("A", ["t"])
    assert group.rebalance() == {"A": [("t", p) for p in range(6)]}
    group.join("B", ["t"])
    group.join("C", ["t"])
    first = group.rebalance()  # A gives up four partitions; nobody gets them yet
    assert first == {"A": [("t", 0), ("t", 1)], "B": [], "C": []}
    second = group.rebalance()
    assert second["A"] == [("t", 0), ("t", 1)]
    assert sorted(second["B"] + second["C"]) == [("t", p) for p in range(2, 6)]
    assert len(second["B"]) == len(second["C"]) == 2


def test_higher_generation_wins_a_disputed_partition() -> None:
    partitions = {"t": 2}
    members = {
        "a": Member("a", Subscription(["t"], owned_partitions=[("t", 0)], generation_id=3)),
        "b": Member("b", Subscription(["t"], owned_partitions=[("t", 0), ("t", 1)], generation_id=5)),
    }
    # b's claims (generation 5) win both; balance then gives a the higher-numbered one
    assert CooperativeStickyAssignor().target(members, partitions) == {
        "a": [("t", 1)], "b": [("t", 0)]}
    # the cooperative rule: a still lists t-0 (stale), b still owns t-1: t-1 is held back
    assert CooperativeStickyAssignor().assign(members, partitions) == {"a": [], "b": [("t", 0)]}


def test_generation_from_user_data_settles_disputes() -> None:
    # subscription v1 (no generation field): Java's cooperative-sticky user data decides
    data_old = encode_subscription(Subscription(["t"], struct.pack(">i", 2), [("t", 0)]), version=1)
    data_new = encode_subscription(Subscription(["t"], struct.pack(">i", 8), [("t", 0)]), version=1)
    members = {"a": Member("a", decode_subscription(data_old)),
               "b": Member("b", decode_subscription(data_new))}
    assert CooperativeStickyAssignor().target(members, {"t": 1}) == {"a": [], "b": [("t", 0)]}


def test_lapsed_claims_are_dropped() -> None:
    members = {"a": Member("a", Subscription(["t"], owned_partitions=[("t", 5), ("u", 0),
                                                                      ("gone", 0), ("t", 0)]))}
    # t-5 no longer exists, a unsubscribed from u, gone was deleted
    assert CooperativeStickyAssignor().assign(members, {"t": 2, "u": 1}) == {"a": [("t", 0), ("t", 1)]}


def test_large_group_is_fast() -> None:
    partitions = {f"topic-{i}": 200 for i in range(10)}  # 2000 partitions
    group = Group(partitions)
    for i in range(100):
        group.join(f"member-{i:03d}", list(partitions))
    group.rebalance()
    for i in range(100, 130):
        group.join(f"member-{i:03d}", list(partitions))
    for i in range(0, 100, 7):
        group.leave(f"member-{i:03d}")
    group.rebalance()
    result = group.rebalance()
    assert assigned(result) == subscribed_partitions(group.members, partitions)
    loads = [len(v) for v in result.values()]
    assert max(loads) - min(loads) <= 1
