"""The APIs the broker offers, with the version ranges it advertises in ApiVersions.

Each client sends min(its highest version, our highest), so every version inside a range is
served; the floors are Apache Kafka 4.x's (clients such as aiokafka refuse to talk when a
broker's floor is above their ceiling). The set reads as one coherent Kafka 3.x release
(Metadata 12, Fetch 12, Produce 10, ListOffsets 7): kafka-python infers a broker release from
these numbers and turns features on and off by it. Nothing is advertised that is not
implemented: librdkafka calls whatever it sees (a half-done telemetry API makes it loop).

``FIRST_FLEXIBLE`` is the first version of each API that uses flexible encoding (compact
strings and arrays, tagged fields, request header v2 / response header v1), from Kafka's
message schemas. ApiVersions is the exception for the response header: always v0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    first_flexible: int        # 10**6: never flexible
    served_from: int = -1      # below this, advertised but answered UNSUPPORTED_VERSION

    def serves(self, version: int) -> bool:
        return max(self.min_version, self.served_from) <= version <= self.max_version


NEVER = 10**6

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
DELETE_RECORDS = 21
INIT_PRODUCER_ID = 22
OFFSET_FOR_LEADER_EPOCH = 23
ADD_PARTITIONS_TO_TXN = 24
ADD_OFFSETS_TO_TXN = 25
END_TXN = 26
TXN_OFFSET_COMMIT = 28
DESCRIBE_CONFIGS = 32
DELETE_GROUPS = 42
ALTER_CONFIGS = 33
CREATE_PARTITIONS = 37
INCREMENTAL_ALTER_CONFIGS = 44
OFFSET_DELETE = 47
DESCRIBE_CLUSTER = 60
DESCRIBE_PRODUCERS = 61
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66
CONSUMER_GROUP_HEARTBEAT = 68
CONSUMER_GROUP_DESCRIBE = 69

OFFERED: dict[int, Api] = {api.key: api for api in (
    # Produce v0-2 stay advertised (min 0) because librdkafka disables compressed produce when
    # a broker's Produce floor is above 0 (KAFKA-18659); requests at v0-2 get UNSUPPORTED_VERSION.
    Api(PRODUCE, "Produce", 0, 10, 9, served_from=3),
    Api(FETCH, "Fetch", 4, 12, 12),
    Api(LIST_OFFSETS, "ListOffsets", 1, 7, 6),
    Api(METADATA, "Metadata", 0, 12, 9),
    # OffsetCommit/OffsetFetch v9 carry KIP-848 member epochs (librdkafka's consumer
    # protocol needs both at 9 besides ConsumerGroupHeartbeat v1).
    Api(OFFSET_COMMIT, "OffsetCommit", 2, 9, 8),
    Api(OFFSET_FETCH, "OffsetFetch", 1, 9, 6),
    Api(FIND_COORDINATOR, "FindCoordinator", 0, 6, 3),
    # JoinGroup stops at 7: v9 would make kafka-python take this broker for Kafka 3.2 and
    # the rest of the set is 3.0's; v8/v9 add only a reason string and skip_assignment.
    Api(JOIN_GROUP, "JoinGroup", 0, 7, 6),
    Api(HEARTBEAT, "Heartbeat", 0, 4, 4),
    Api(LEAVE_GROUP, "LeaveGroup", 0, 5, 4),
    Api(SYNC_GROUP, "SyncGroup", 0, 5, 4),
    Api(DESCRIBE_GROUPS, "DescribeGroups", 0, 5, 5),
    Api(LIST_GROUPS, "ListGroups", 0, 5, 3),
    Api(DELETE_GROUPS, "DeleteGroups", 0, 2, 2),
    Api(OFFSET_DELETE, "OffsetDelete", 0, 0, NEVER),
    Api(API_VERSIONS, "ApiVersions", 0, 4, 3),
    Api(CREATE_TOPICS, "CreateTopics", 2, 7, 5),
    Api(DELETE_TOPICS, "DeleteTopics", 1, 6, 4),
    Api(DELETE_RECORDS, "DeleteRecords", 0, 2, 2),
    Api(INIT_PRODUCER_ID, "InitProducerId", 0, 4, 2),
    Api(OFFSET_FOR_LEADER_EPOCH, "OffsetForLeaderEpoch", 2, 4, 4),
    # Transactions stop at v3: v4+ of AddPartitionsToTxn is broker-to-broker, and v5 of
    # the others is KIP-890's Transactions V2, which clients must not be told of.
    Api(ADD_PARTITIONS_TO_TXN, "AddPartitionsToTxn", 0, 3, 3),
    Api(ADD_OFFSETS_TO_TXN, "AddOffsetsToTxn", 0, 3, 3),
    Api(END_TXN, "EndTxn", 0, 3, 3),
    Api(TXN_OFFSET_COMMIT, "TxnOffsetCommit", 0, 3, 3),
    Api(DESCRIBE_PRODUCERS, "DescribeProducers", 0, 0, 0),
    Api(DESCRIBE_TRANSACTIONS, "DescribeTransactions", 0, 0, 0),
    Api(LIST_TRANSACTIONS, "ListTransactions", 0, 1, 0),
    Api(DESCRIBE_CONFIGS, "DescribeConfigs", 1, 4, 4),
    Api(ALTER_CONFIGS, "AlterConfigs", 0, 2, 2),
    Api(CREATE_PARTITIONS, "CreatePartitions", 0, 3, 2),
    Api(INCREMENTAL_ALTER_CONFIGS, "IncrementalAlterConfigs", 0, 1, 1),
    Api(DESCRIBE_CLUSTER, "DescribeCluster", 0, 1, 0),
    # KIP-848. librdkafka's group.protocol=consumer needs exactly v1.
    Api(CONSUMER_GROUP_HEARTBEAT, "ConsumerGroupHeartbeat", 0, 1, 0),
    Api(CONSUMER_GROUP_DESCRIBE, "ConsumerGroupDescribe", 0, 0, 0),
)}

# What ApiVersions lists: (api key, min, max), in key order.
ADVERTISED: list[tuple[int, int, int]] = [
    (api.key, api.min_version, api.max_version) for api in sorted(OFFERED.values(), key=lambda a: a.key)]


def api_name(key: int) -> str:
    api = OFFERED.get(key)
    return api.name if api is not None else f"api {key}"
