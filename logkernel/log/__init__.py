"""Partition logs: segments, offsets, recovery, retention (see partition.py)."""
