"""Reads: the stored counts plus what is still buffered, each delta counted once.

Reads run one script per shard that returns, atomically, the live and every
claimed delta of the series with their batch ids (the live hash's too), then
read in one SQL statement the stored counts and which of those ids are
applied, and add the deltas of the others. A batch is thus counted once
whether its flush claims and commits it before, during or after the read;
a live hash needs its id because a flush may claim and commit it between the
two reads. Each hash is asked only for the buckets its index lists.

A read of many series is cut into slices of a shard's projects, one script
each, so that no script holds Redis long (:data:`READ_SCRIPT_FIELDS`), sent
a few at a time (:data:`READ_ROUND_FIELDS`) so that writers get in between.
A flush may claim or commit a batch between two slices: each slice still
returns every delta of its projects (all their cells) atomically with the
batch ids, and the one SQL statement, after the last slice, says which of
all those ids are applied, so each cell is counted once, from the database
or from the one script that read it, as with several shards.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from .. import database
from . import client, scripts
from .client import BufferUnavailable, Call
from .keys import _by_shard, _config, _grouped, _shard, _tag, redis_only_rollups

logger = logging.getLogger("project_stats.flush")


def _answers(
    config: dict[str, Any], source: str, calls: Sequence[Call], fields: Sequence[int] = ()
) -> list[Any] | None:
    """Every call's reply, or None when Redis cannot answer one and
    ``READ_ON_ERROR`` is ``"database"`` (else :class:`BufferUnavailable`).

    With ``fields`` (asked by each call), in rounds (:func:`_in_rounds`).
    """
    try:
        if fields:
            return _in_rounds(config, source, calls, fields)
        return client._every_reply(config, source, calls)
    except BufferUnavailable:
        if config["READ_ON_ERROR"] != "database":
            raise
        logger.warning("Redis unavailable; answering a read from the database alone.")
        return None


# The most fields (projects x stats x buckets) a read script asks of one
# hash: a shard's projects are read in slices of that many (one project at
# least). Measured with bench/stats_v2_buffered.py: about 0.8 us a field in
# a live hash of 36,000, so some 1.5 ms a hash.
READ_SCRIPT_FIELDS = 2_000
# The most fields the read scripts sent in one round trip ask together (one
# script at least): Redis runs a pipeline's scripts back to back, so writers
# wait for at most one round.
READ_ROUND_FIELDS = 8 * READ_SCRIPT_FIELDS


def _read_slices(
    config: dict[str, Any], project_ids: Iterable[int], width: int
) -> list[tuple[int, list[int]]]:
    """``(shard, project ids)`` per read script: each shard's projects in slices
    of at most ``READ_SCRIPT_FIELDS // width`` (``width``: fields per project).

    A project's cells all fall in one slice: one script reads all its deltas.
    """
    size = max(1, READ_SCRIPT_FIELDS // max(1, width))
    return [
        (shard, shard_ids[i : i + size])
        for shard, shard_ids in _by_shard(config, project_ids).items()
        for i in range(0, len(shard_ids), size)
    ]


def _in_rounds(
    config: dict[str, Any], source: str, calls: Sequence[Call], fields: Sequence[int]
) -> list[Any]:
    """:func:`_every_reply` of the read scripts ``calls`` (asking ``fields``
    each), sent in rounds of at most :data:`READ_ROUND_FIELDS` fields."""
    replies: list[Any] = []
    start = 0
    while start < len(calls):
        end, asked = start + 1, fields[start]
        while end < len(calls) and asked + fields[end] <= READ_ROUND_FIELDS:
            asked += fields[end]
            end += 1
        replies += client._every_reply(config, source, calls[start:end])
        start = end
    return replies


def read(
    project_ids: Sequence[int],
    stat: int,
    environment: str,
    rollup: int,
    buckets: Sequence[int],
) -> dict[tuple[int, int], int]:
    """Stored plus buffered counts keyed by ``(project_id, bucket_start)``.

    Read scripts in rounds, then one SQL statement (see :func:`read_stats`).
    """
    cells = read_stats(project_ids, [stat], environment, rollup, buckets)
    return {(pk, epoch): count for (pk, _, epoch), count in cells.items()}


def read_stats(
    project_ids: Sequence[int],
    stats: Sequence[int],
    environment: str,
    rollup: int,
    buckets: Sequence[int],
) -> dict[tuple[int, int, int], int]:
    """Stored plus buffered counts of several stats keyed by ``(project_id, stat, bucket_start)``.

    One script per slice of a shard's projects (:func:`_read_slices`), sent
    in rounds (one round trip per node each; one round for a small read),
    then one SQL statement, however many stats. Redis looks up only the
    buckets its hashes hold in the range (their index), so a long series
    over many projects costs it what is buffered, not what is asked. The
    number of series is the caller's to bound (``MAX_TOTAL_POINTS``).

    A live hash is keyed by the id its batch will have: a flush may claim and
    commit it before the database is read, which then says so.
    """
    config = _config()
    ids = sorted(set(project_ids))
    slices = _read_slices(config, ids, len(stats) * len(buckets))
    codes = ";".join(str(stat) for stat in stats)
    if rollup in redis_only_rollups(config):
        return _read_short(config, slices, codes, environment, rollup, buckets)
    calls: list[Call] = []
    for shard, slice_ids in slices:
        tag = _tag(config, shard)
        calls.append(
            (
                shard,
                [f"{tag}:live", f"{tag}:batches"],
                [f"{tag}:batch:", rollup, buckets[0], buckets[-1], codes, f":{environment}"]
                + slice_ids,
            )
        )
    width = len(stats) * len(buckets)
    fields = [width * len(slice_ids) for _, slice_ids in slices]
    replies = (_answers(config, scripts.READ, calls, fields) if calls and stats else None) or []
    batches: dict[str, Counter[tuple[int, int, int]]] = {}
    for reply in replies:
        for position in range(0, len(reply), 2):
            if reply[position] is None:
                continue  # no live hash
            found = reply[position + 1]
            deltas = batches.setdefault(reply[position].decode(), Counter())
            for field, value in zip(found[::2], found[1::2], strict=True):
                pk, stat, _, epoch, _ = field.split(b":", 4)
                deltas[(int(pk), int(stat), int(epoch))] += int(value)
    cells, applied = database.read_cells(
        ids, stats, environment, rollup, buckets[0], buckets[-1], sorted(batches)
    )
    for batch_id, deltas in batches.items():
        if batch_id not in applied:
            for key, delta in deltas.items():
                cells[key] = cells.get(key, 0) + delta
    return cells


def _read_short(
    config: dict[str, Any],
    slices: Sequence[tuple[int, list[int]]],
    codes: str,
    environment: str,
    rollup: int,
    buckets: Sequence[int],
) -> dict[tuple[int, int, int], int]:
    """A Redis-only rollup's counts, from Redis alone (one script per slice, in rounds).

    Raises :class:`BufferUnavailable` when Redis cannot answer, whatever
    ``READ_ON_ERROR`` says.
    """
    calls: list[Call] = [
        (
            shard,
            [f"{_tag(config, shard)}:live"],
            [
                rollup,
                buckets[0],
                buckets[-1],
                codes,
                f":{environment}",
                *_grouped(config, slice_ids),
            ],
        )
        for shard, slice_ids in slices
    ]
    # Not READ_ON_ERROR's fallback: the database holds nothing of these
    # rollups, so its answer would be zeros that look like counts.
    width = len(codes.split(";")) * len(buckets)
    fields = [width * len(slice_ids) for _, slice_ids in slices]
    replies = _in_rounds(config, scripts.READ_SHORT, calls, fields) if calls and codes else []
    cells: dict[tuple[int, int, int], int] = {}
    for reply in replies:
        for position in range(0, len(reply), 2):
            epoch = int(reply[position])
            found = reply[position + 1]
            for field, value in zip(found[::2], found[1::2], strict=True):
                pk, stat, _ = field.split(b":", 2)
                cells[(int(pk), int(stat), epoch)] = int(value)
    return cells


def environment_seen(project_ids: Iterable[int], environment: str) -> bool:
    """Whether an increment with ``environment`` is buffered for any of the projects.

    A batch's marker stays in Redis until its counts are committed, so
    "not buffered" checked before "not stored" misses nothing.
    """
    config = _config()
    fields: defaultdict[int, list[str]] = defaultdict(list)
    for project_id in project_ids:
        fields[_shard(config, project_id)].append(f"e:{project_id}:{environment}")
    calls: list[Call] = []
    for shard, wanted in fields.items():
        tag = _tag(config, shard)
        calls.append((shard, [f"{tag}:live", f"{tag}:batches"], [f"{tag}:batch:", *wanted]))
    replies = (_answers(config, scripts.FIELDS, calls) if calls else None) or []
    return any(
        value is not None
        for reply in replies
        for position in range(1, len(reply), 2)
        for value in reply[position]
    )
