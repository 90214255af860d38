"""Coordinators that live in the engine: committed offsets (and later groups, transactions)."""
