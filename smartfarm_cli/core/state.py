"""Per-device state: one small versioned item per (greenhouse, device, kind).

The rules keep each device's recent readings here (`kind = "jump"`, core.jumps), and alerting
keeps its incidents and last-seen time beside them (issue 14), in the same table and the same
shape. Two stores satisfy one protocol:

- `SqliteStateStore`: a table in the local target's stream database;
- `DynamoStateStore`: a DynamoDB table (partition key `device`, sort key `kind`) for the
  anomaly Lambda; the boto3 client is passed in, so this module imports no AWS library.

Every write is conditional on the version that was read (optimistic concurrency): two writers
judging the same device at once never both win; the loser reloads and judges again.
See docs/state.md.
"""

from __future__ import annotations

import json
import time
from typing import Protocol

StateKey = tuple[str, str, str]  # (greenhouse_id, device_id, kind)
HISTORY_KEEP_MS = 30 * 86_400_000  # incident history (`farmctl alerts`), on both targets
# (key, new body, version that was read (0 = absent), expiry in epoch ms)
StateWrite = tuple[StateKey, dict, int, int]


class StateConflict(RuntimeError):
    """A device's state kept changing under us; the caller's work must be retried."""


class StateStore(Protocol):
    def load(self, keys: list[StateKey]) -> dict[StateKey, tuple[dict | None, int]]:
        """Every key -> (body, version); (None, 0) when absent or expired."""
        ...

    def save(self, writes: list[StateWrite]) -> list[StateKey]:
        """Write each body as version + 1 if the stored version still is the one read.

        Returns the keys that were not written because another writer got there first.
        """
        ...

    def scan(self, kind: str) -> list[tuple[StateKey, dict, int]]:
        """Every live item of one kind (the silent-device check walks the devices)."""
        ...


def _text(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS device_state (
    greenhouse_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (greenhouse_id, device_id, kind)
) WITHOUT ROWID;
"""


class SqliteStateStore:
    """StateStore over a table of an SQLite database (autocommit connection)."""

    def __init__(self, db, clock=time.time):
        self.db = db
        self.clock = clock
        db.execute(SQLITE_DDL)  # one statement: safe inside an open transaction

    def load(self, keys: list[StateKey]) -> dict[StateKey, tuple[dict | None, int]]:
        now_ms = int(self.clock() * 1000)
        found: dict[StateKey, tuple[dict | None, int]] = {key: (None, 0) for key in keys}
        for start in range(0, len(keys), 300):
            chunk = keys[start : start + 300]
            where = " OR ".join(["(greenhouse_id = ? AND device_id = ? AND kind = ?)"] * len(chunk))
            rows = self.db.execute(
                "SELECT greenhouse_id, device_id, kind, version, body, expires_ms "
                f"FROM device_state WHERE {where}",
                [part for key in chunk for part in key],
            ).fetchall()
            for greenhouse, device, kind, version, body, expires_ms in rows:
                # An expired item reads as absent but keeps its version for the next write.
                live = expires_ms > now_ms
                found[(greenhouse, device, kind)] = (json.loads(body) if live else None, version)
        return found

    def scan(self, kind: str) -> list[tuple[StateKey, dict, int]]:
        now_ms = int(self.clock() * 1000)
        rows = self.db.execute(
            "SELECT greenhouse_id, device_id, kind, version, body FROM device_state "
            "WHERE kind = ? AND expires_ms > ? ORDER BY greenhouse_id, device_id",
            (kind, now_ms),
        ).fetchall()
        return [((g, d, k), json.loads(body), version) for g, d, k, version, body in rows]

    def save(self, writes: list[StateWrite]) -> list[StateKey]:
        """Conditional writes in one transaction (or in the caller's, when one is open)."""
        if not writes:
            return []
        now_ms = int(self.clock() * 1000)
        if self.db.in_transaction:
            return self._write(writes, now_ms)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            conflicts = self._write(writes, now_ms)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return conflicts

    def _write(self, writes: list[StateWrite], now_ms: int) -> list[StateKey]:
        conflicts = []
        for key, body, expected, expires_ms in writes:
            if expected == 0:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO device_state VALUES (?, ?, ?, 1, ?, ?, ?)",
                    (*key, _text(body), now_ms, expires_ms),
                )
            else:
                cursor = self.db.execute(
                    "UPDATE device_state SET version = version + 1, body = ?, updated_ms = ?, "
                    "expires_ms = ? WHERE greenhouse_id = ? AND device_id = ? AND kind = ? "
                    "AND version = ?",
                    (_text(body), now_ms, expires_ms, *key, expected),
                )
            if cursor.rowcount != 1:
                conflicts.append(key)
        return conflicts


def dynamo_key(key: StateKey) -> dict:
    """The DynamoDB primary key of one state item: `device` = "<greenhouse>/<device>"."""
    greenhouse, device, kind = key
    return {"device": {"S": f"{greenhouse}/{device}"}, "kind": {"S": kind}}


class DynamoStateStore:
    """StateStore over a DynamoDB table (on-demand; TTL on `expires_at`, epoch seconds).

    Items: device (S, partition key), kind (S, sort key), version (N), body (S, JSON),
    updated_ms (N), expires_at (N). DynamoDB deletes expired items lazily (within days), so
    reads treat an item past `expires_at` as absent, as the SQLite store does.
    """

    def __init__(self, client, table: str, clock=time.time):
        self.client = client
        self.table = table
        self.clock = clock

    def load(self, keys: list[StateKey]) -> dict[StateKey, tuple[dict | None, int]]:
        now_s = self.clock()
        found: dict[StateKey, tuple[dict | None, int]] = {key: (None, 0) for key in keys}
        by_id = {(dynamo_key(k)["device"]["S"], k[2]): k for k in keys}
        for start in range(0, len(keys), 100):  # BatchGetItem takes at most 100 keys
            request = {
                self.table: {
                    "Keys": [dynamo_key(k) for k in keys[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            for attempt in range(10):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    key = by_id[(item["device"]["S"], item["kind"]["S"])]
                    version = int(item["version"]["N"])
                    live = float(item.get("expires_at", {}).get("N", "inf")) > now_s
                    found[key] = (json.loads(item["body"]["S"]) if live else None, version)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise StateConflict("DynamoDB kept returning unprocessed keys; try again")
        return found

    def scan(self, kind: str) -> list[tuple[StateKey, dict, int]]:
        """A consistent Scan filtered on `kind` (small: one item per device and kind)."""
        now_s = self.clock()
        found = []
        request = {
            "TableName": self.table,
            "FilterExpression": "kind = :kind",
            "ExpressionAttributeValues": {":kind": {"S": kind}},
            "ConsistentRead": True,
        }
        while True:
            response = self.client.scan(**request)
            for item in response.get("Items", []):
                if float(item.get("expires_at", {}).get("N", "inf")) <= now_s:
                    continue
                greenhouse, device = item["device"]["S"].split("/", 1)
                key = (greenhouse, device, item["kind"]["S"])
                found.append((key, json.loads(item["body"]["S"]), int(item["version"]["N"])))
            if "LastEvaluatedKey" not in response:
                return sorted(found, key=lambda f: f[0])
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def save(self, writes: list[StateWrite]) -> list[StateKey]:
        conflicts = []
        failed = self.client.exceptions.ConditionalCheckFailedException
        now_ms = int(self.clock() * 1000)
        for key, body, expected, expires_ms in writes:
            item = {
                **dynamo_key(key),
                "version": {"N": str(expected + 1)},
                "body": {"S": _text(body)},
                "updated_ms": {"N": str(now_ms)},
                "expires_at": {"N": str(expires_ms // 1000)},
            }
            if expected == 0:
                condition, values = "attribute_not_exists(device)", {}
            else:
                condition, values = "version = :read", {":read": {"N": str(expected)}}
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression=condition,
                    **({"ExpressionAttributeValues": values} if values else {}),
                )
            except failed:
                conflicts.append(key)
        return conflicts


class DynamoEventLog:
    """Append-only history (incident events) in the state table, beside the device items.

    Partition `device` = "_log/<UTC day>", sort key `kind` = "<at ms, 13 digits>#<source
    digest>#<n>": deterministic, so a retried invocation rewrites the same items instead of
    adding copies. `body` holds the record (JSON); `expires_at` drops it after `keep_ms`.
    Written with BatchWriteItem (25 a call), read with one Query per day.
    """

    PREFIX = "_log/"

    def __init__(self, client, table: str, keep_ms: int = HISTORY_KEEP_MS):
        self.client = client
        self.table = table
        self.keep_ms = keep_ms

    @staticmethod
    def _day(ms: int) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))

    def append(self, records: list[dict], source: str) -> None:
        import hashlib

        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "device": {"S": self.PREFIX + self._day(r["at_ms"])},
                        "kind": {"S": f"{r['at_ms']:013d}#{digest}#{n:04d}"},
                        "body": {"S": _text(r)},
                        "expires_at": {"N": str((r["at_ms"] + self.keep_ms) // 1000)},
                    }
                }
            }
            for n, r in enumerate(records)
        ]
        for start in range(0, len(items), 25):  # BatchWriteItem takes at most 25 items
            request = {self.table: items[start : start + 25]}
            for attempt in range(10):
                response = self.client.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise StateConflict("DynamoDB kept returning unprocessed items; try again")

    def since(self, start_ms: int, end_ms: int) -> list[dict]:
        """Every record with start_ms <= at_ms <= end_ms (one Query per UTC day)."""
        found = []
        day_ms = start_ms - start_ms % 86_400_000
        while day_ms <= end_ms:
            request = {
                "TableName": self.table,
                "KeyConditionExpression": "device = :day AND kind >= :start",
                "ExpressionAttributeValues": {
                    ":day": {"S": self.PREFIX + self._day(day_ms)},
                    ":start": {"S": f"{start_ms:013d}"},
                },
            }
            while True:
                response = self.client.query(**request)
                found += [json.loads(item["body"]["S"]) for item in response.get("Items", [])]
                if "LastEvaluatedKey" not in response:
                    break
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
            day_ms += 86_400_000
        return [r for r in found if r["at_ms"] <= end_ms]
