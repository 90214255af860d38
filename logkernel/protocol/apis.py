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
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
DELETE_RECORDS = 21
INIT_PRODUCER_ID = 22
OFFSET_FOR_LEADER_EPOCH = 23
DESCRIBE_CONFIGS = 32
ALTER_CONFIGS = 33
CREATE_PARTITIONS = 37
INCREMENTAL_ALTER_CONFIGS = 44
DESCRIBE_CLUSTER = 60

OFFERED: dict[int, Api] = {api.key: api for api in (
    # Produce v0-2 stay advertised (min 0) because librdkafka disables compressed produce when
    # a broker's Produce floor is above 0 (KAFKA-18659); requests at v0-2 get UNSUPPORTED_VERSION.
    Api(PRODUCE, "Produce", 0, 10, 9, served_from=3),
    Api(FETCH, "Fetch", 4, 12, 12),
    Api(LIST_OFFSETS, "ListOffsets", 1, 7, 6),
    Api(METADATA, "Metadata", 0, 12, 9),
    # Offered before the group APIs because librdkafka dates its LZ4 support by it (an
    # LZ4 produce is sent uncompressed to a broker without FindCoordinator).
    # Commits outside group membership (generation -1: a consumer that assigns its own
    # partitions), as Kafka accepts them; group members come with the group protocol.
    Api(OFFSET_COMMIT, "OffsetCommit", 2, 9, 8),
    Api(OFFSET_FETCH, "OffsetFetch", 1, 9, 6),
    Api(FIND_COORDINATOR, "FindCoordinator", 0, 6, 3),
    Api(API_VERSIONS, "ApiVersions", 0, 4, 3),
    Api(CREATE_TOPICS, "CreateTopics", 2, 7, 5),
    Api(DELETE_TOPICS, "DeleteTopics", 1, 6, 4),
    Api(DELETE_RECORDS, "DeleteRecords", 0, 2, 2),
    Api(INIT_PRODUCER_ID, "InitProducerId", 0, 4, 2),
    Api(OFFSET_FOR_LEADER_EPOCH, "OffsetForLeaderEpoch", 2, 4, 4),
    Api(DESCRIBE_CONFIGS, "DescribeConfigs", 1, 4, 4),
    Api(ALTER_CONFIGS, "AlterConfigs", 0, 2, 2),
    Api(CREATE_PARTITIONS, "CreatePartitions", 0, 3, 2),
    Api(INCREMENTAL_ALTER_CONFIGS, "IncrementalAlterConfigs", 0, 1, 1),
    Api(DESCRIBE_CLUSTER, "DescribeCluster", 0, 1, 0),
)}

# What ApiVersions lists: (api key, min, max), in key order.
ADVERTISED: list[tuple[int, int, int]] = [
    (api.key, api.min_version, api.max_version) for api in sorted(OFFERED.values(), key=lambda a: a.key)]


def api_name(key: int) -> str:
    api = OFFERED.get(key)
    return api.name if api is not None else f"api {key}"
