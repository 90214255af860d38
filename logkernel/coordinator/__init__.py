"""Coordinators that live in the engine, shared by the embedded clients and the broker:
consumer groups (``group_coordinator``: classic groups in ``classic_group``, KIP-848 groups in
``consumer_group``), committed offsets and stored membership (``offsets``), assignors and
the consumer protocol's bytes (``assignors``, ``server_assignors``). Transactions come later."""
