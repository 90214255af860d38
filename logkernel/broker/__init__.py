"""The local broker: Kafka's wire protocol over the engine.

``logkernel serve`` runs it as a process; ``logkernel.Broker`` runs it on a background thread
of the calling process (a pytest fixture, a notebook)::

    with logkernel.Broker("data/") as broker:
        producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})

This package is the only code with sockets. ``server`` is the listener and connections;
``cluster``, ``data``, ``offsets``, ``groups`` and ``admin`` are the handlers, one module per API family; each
translates a decoded request into engine calls and engine results into a response.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

from logkernel.broker import admin, cluster, data, groups, offsets, transactions
from logkernel.broker.server import BrokerServer, Handler
from logkernel.config import BrokerConfig
from logkernel.engine import Engine
from logkernel.protocol import apis

log = logging.getLogger("logkernel.broker")

HANDLERS: dict[int, Handler] = {
    apis.PRODUCE: data.handle_produce,
    apis.FETCH: data.handle_fetch,
    apis.LIST_OFFSETS: data.handle_list_offsets,
    apis.METADATA: cluster.handle_metadata,
    apis.FIND_COORDINATOR: cluster.handle_find_coordinator,
    apis.OFFSET_COMMIT: offsets.handle_offset_commit,
    apis.OFFSET_FETCH: offsets.handle_offset_fetch,
    apis.API_VERSIONS: cluster.handle_api_versions,
    apis.CREATE_TOPICS: admin.handle_create_topics,
    apis.DELETE_TOPICS: admin.handle_delete_topics,
    apis.DELETE_RECORDS: data.handle_delete_records,
    apis.INIT_PRODUCER_ID: transactions.handle_init_producer_id,
    apis.ADD_PARTITIONS_TO_TXN: transactions.handle_add_partitions_to_txn,
    apis.ADD_OFFSETS_TO_TXN: transactions.handle_add_offsets_to_txn,
    apis.END_TXN: transactions.handle_end_txn,
    apis.TXN_OFFSET_COMMIT: transactions.handle_txn_offset_commit,
    apis.LIST_TRANSACTIONS: transactions.handle_list_transactions,
    apis.DESCRIBE_TRANSACTIONS: transactions.handle_describe_transactions,
    apis.DESCRIBE_PRODUCERS: transactions.handle_describe_producers,
    apis.OFFSET_FOR_LEADER_EPOCH: data.handle_offset_for_leader_epoch,
    apis.DESCRIBE_CONFIGS: admin.handle_describe_configs,
    apis.ALTER_CONFIGS: admin.handle_alter_configs,
    apis.CREATE_PARTITIONS: admin.handle_create_partitions,
    apis.INCREMENTAL_ALTER_CONFIGS: admin.handle_incremental_alter_configs,
    apis.DESCRIBE_CLUSTER: cluster.handle_describe_cluster,
    apis.JOIN_GROUP: groups.handle_join_group,
    apis.SYNC_GROUP: groups.handle_sync_group,
    apis.HEARTBEAT: groups.handle_heartbeat,
    apis.LEAVE_GROUP: groups.handle_leave_group,
    apis.LIST_GROUPS: groups.handle_list_groups,
    apis.DESCRIBE_GROUPS: groups.handle_describe_groups,
    apis.DELETE_GROUPS: groups.handle_delete_groups,
    apis.OFFSET_DELETE: groups.handle_offset_delete,
    apis.CONSUMER_GROUP_HEARTBEAT: groups.handle_consumer_group_heartbeat,
    apis.CONSUMER_GROUP_DESCRIBE: groups.handle_consumer_group_describe,
}
assert set(HANDLERS) == set(apis.OFFERED), "every offered API needs a handler, and only those"

# Error answers for requests whose response has no top-level error code.
ERROR_ANSWERS = {apis.PRODUCE: data.produce_error_answer}


def parse_address(text: str, what: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); raises ValueError with a usable message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:9092), got {text!r}")
    return host.strip("[]"), int(port)


class Broker:
    """A broker over a data directory, served from a background thread.

    ``start()`` opens the engine (recovering it if needed), binds ``listen`` (port 0 picks a
    free one) and returns once connections are accepted; ``bootstrap`` is then the
    "host:port" for clients. ``stop()`` stops accepting, lets in-flight requests finish,
    flushes and closes the engine. Config takes Kafka broker names (see BrokerConfig).
    """

    def __init__(self, data_dir: str, listen: str = "127.0.0.1:0",
                 config: Mapping[str, Any] | None = None, advertised: str | None = None) -> None:
        self.data_dir = data_dir
        self.config = BrokerConfig(config)
        self._listen = parse_address(listen, "listen")
        self._advertised = parse_address(advertised, "advertised") if advertised else None
        self.engine: Engine | None = None
        self.server: BrokerServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def bootstrap(self) -> str:
        if self.server is None or not self._ready.is_set():
            raise RuntimeError("the broker is not running; call start() first")
        return f"{self.server.advertised_host}:{self.server.advertised_port}"

    def start(self) -> Broker:
        if self._thread is not None:
            raise RuntimeError("the broker was already started")
        self._thread = threading.Thread(target=self._run, name="logkernel-broker", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> None:
        self.engine, self.server = await open_server(self.data_dir, self.config, self._listen,
                                                     self._advertised)

    async def _shutdown(self) -> None:
        assert self.server is not None
        await self.server.stop()

    def stop(self) -> None:
        """Stops serving, flushes and closes the engine. Idempotent."""
        if self._thread is None or self._loop is None:
            return
        if self._thread.is_alive() and self.server is not None:
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                future.result(timeout=15)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
        if self.engine is not None:
            self.engine.close()
        self._thread = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap if self._ready.is_set() and self.server else "not started"
        return f"<logkernel.Broker {self.data_dir!r} {where}>"


async def open_server(data_dir: str, config: BrokerConfig, listen: tuple[str, int],
                      advertised: tuple[str, int] | None) -> tuple[Engine, BrokerServer]:
    """Opens the engine (recovering it if needed) and starts listening; on failure the
    engine is closed again. Both front ends (Broker, serve_forever) start this way."""
    engine = Engine(data_dir, config.engine_settings())
    try:
        server = BrokerServer(engine, config, HANDLERS, ERROR_ANSWERS, apis.ADVERTISED)
        await server.start(*listen, advertised)
    except BaseException:
        engine.close()
        raise
    return engine, server


async def serve_forever(data_dir: str, listen: str, config: Mapping[str, Any] | None,
                        advertised: str | None, on_ready: Any, stop: asyncio.Event) -> None:
    """Runs a broker on the current event loop until ``stop`` is set (the CLI's SIGTERM)."""
    engine, server = await open_server(
        data_dir, BrokerConfig(config), parse_address(listen, "listen"),
        parse_address(advertised, "advertised") if advertised else None)
    try:
        on_ready(f"{server.advertised_host}:{server.advertised_port}", engine.path)
        await stop.wait()
        await server.stop()
    finally:
        engine.close()
