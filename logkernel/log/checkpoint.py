"""Small durable files: written whole to ``<name>.tmp``, fsynced, renamed over the old
file, and the directory fsynced, so a crash leaves either the old or the new contents,
never a mix (Kafka's CheckpointFile does the same).

The partition checkpoint, one per partition directory, is text::

    0                          format version
    recovery-point 1234        every offset below this was fsynced
    log-start-offset 1000      the first offset readers may see

A checkpoint that is missing or unreadable is not an error: the partition log then
recovers from its first segment, which costs time but loses nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from logkernel import errors

CHECKPOINT_FILE = "partition.checkpoint"
CHECKPOINT_VERSION = 0


def fsync_directory(path: str) -> None:
    """Makes a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes) -> None:
    """Replaces ``path`` with ``data``: temp file, fsync, rename, directory fsync.

    On a full disk this raises NoSpaceError and leaves ``path`` as it was, and no temp
    file behind: a half-written one would hold space until the next open removes it,
    on exactly the volume that has none."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        converted = errors.no_space(exc, f"writing {os.path.basename(path)}", path)
        if converted is exc:
            raise
        raise converted from exc
    fsync_directory(os.path.dirname(path) or ".")


@dataclass(frozen=True)
class PartitionCheckpoint:
    recovery_point: int
    log_start_offset: int


def write_partition_checkpoint(directory: str, checkpoint: PartitionCheckpoint) -> None:
    text = (f"{CHECKPOINT_VERSION}\nrecovery-point {checkpoint.recovery_point}\n"
            f"log-start-offset {checkpoint.log_start_offset}\n")
    write_atomically(os.path.join(directory, CHECKPOINT_FILE), text.encode("ascii"))


def read_partition_checkpoint(directory: str) -> tuple[PartitionCheckpoint | None, str]:
    """(checkpoint, "") or (None, why it could not be used)."""
    path = os.path.join(directory, CHECKPOINT_FILE)
    try:
        with open(path, "rb") as f:
            text = f.read(4096).decode("ascii")
    except FileNotFoundError:
        return None, "no checkpoint file"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable checkpoint {path}: {exc}"
    lines = text.split("\n")
    try:
        if lines[0] != str(CHECKPOINT_VERSION) or lines[3] != "" or len(lines) != 4:
            raise ValueError("unexpected layout")
        fields = dict(line.split(" ") for line in lines[1:3])
        recovery_point = int(fields["recovery-point"])
        log_start_offset = int(fields["log-start-offset"])
        if recovery_point < 0 or log_start_offset < 0:
            raise ValueError("negative offset")
    except (ValueError, KeyError, IndexError) as exc:
        return None, f"corrupt checkpoint {path} ({exc}): {text[:80]!r}"
    return PartitionCheckpoint(recovery_point, log_start_offset), ""


# The cleaner's progress, one per partition directory of a compacted topic::
#
#     0                          format version
#     first-dirty 5120           offsets below this have been cleaned at least once
#     next-horizon-ms 1764...    earliest delete horizon of a kept tombstone (-1: none)
#
# Lost or unreadable, it costs one cleaning of the whole log, never data.
CLEANER_CHECKPOINT_FILE = "cleaner.checkpoint"


@dataclass(frozen=True)
class CleanerCheckpoint:
    first_dirty: int = 0
    next_horizon_ms: int = -1


def write_cleaner_checkpoint(directory: str, checkpoint: CleanerCheckpoint) -> None:
    text = (f"{CHECKPOINT_VERSION}\nfirst-dirty {checkpoint.first_dirty}\n"
            f"next-horizon-ms {checkpoint.next_horizon_ms}\n")
    write_atomically(os.path.join(directory, CLEANER_CHECKPOINT_FILE), text.encode("ascii"))


def read_cleaner_checkpoint(directory: str) -> CleanerCheckpoint:
    """The stored checkpoint, or the start-from-scratch one if it is missing or unreadable."""
    path = os.path.join(directory, CLEANER_CHECKPOINT_FILE)
    try:
        with open(path, "rb") as f:
            lines = f.read(4096).decode("ascii").split("\n")
        if lines[0] != str(CHECKPOINT_VERSION) or len(lines) != 4 or lines[3] != "":
            raise ValueError("unexpected layout")
        fields = dict(line.split(" ") for line in lines[1:3])
        return CleanerCheckpoint(max(int(fields["first-dirty"]), 0),
                                 int(fields["next-horizon-ms"]))
    except FileNotFoundError:
        return CleanerCheckpoint()
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError):
        return CleanerCheckpoint()
