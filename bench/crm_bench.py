"""CRM benchmark: bulk load of synthetic members and orders, tier/LTV recompute, automatic
tag rules and segment-count latency, on SQLite and (with ``--pg``) PostgreSQL.

    .venv/bin/python -m bench.crm_bench [--quick] [--members N --orders M] [--pg] [--no-sqlite]
        [--keep-pg | --reuse-pg SCHEMA]

Full size is 1,000,000 members and 10,000,000 orders; ``--quick`` is 50k / 500k. The
synthetic load uses the bulk paths (``executemany`` on SQLite, ``COPY`` on PostgreSQL) into
the real, migrated schema; PostgreSQL runs in a dedicated schema that is dropped at the end
(``--keep-pg`` keeps it, ``--reuse-pg SCHEMA`` measures a kept one again without reloading).
A bulk load bypasses the importer, so the order-month rollup (``crm.rollup``) is rebuilt
after it, as any bulk path must.
The real CSV importer is timed separately on a small file. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from crm import CrmError, CrmService, rollup
from models import Database

PG_DSN = os.environ.get("KIZUNA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2025, 6, 1, tzinfo=UTC)
DAY = 86400
CHUNK = 500_000

SEGMENTS: list[tuple[str, dict[str, Any]]] = [
    ("tier in (best, good)", {"field": "tier", "op": "in", "value": ["best", "good"]}),
    (
        "tag vip AND language ja",
        {
            "all": [
                {"field": "tag", "op": "has", "value": "vip"},
                {"field": "language", "op": "eq", "value": "ja"},
            ]
        },
    ),
    (
        "birthday June AND not dormant",
        {
            "all": [
                {"field": "birthday_month", "op": "eq", "value": 6},
                {"field": "tier", "op": "ne", "value": "dormant"},
            ]
        },
    ),
    (
        "bought in 30 days AND spend >= 50k",
        {
            "all": [
                {"field": "last_purchase_days", "op": "lte", "value": 30},
                {"field": "spend", "op": "gte", "value": 50000},
            ]
        },
    ),
    (
        "webchat AND NOT tag sensitive-skin",
        {
            "all": [
                {"field": "platform", "op": "eq", "value": "webchat"},
                {"field": "tag", "op": "not_has", "value": "sensitive-skin"},
            ]
        },
    ),
    (
        "spend >= 20k within 90 days",
        {"field": "spend", "op": "gte", "value": 20000, "within_days": 90},
    ),
    ("spend_90d >= 20k (as of recompute)", {"field": "spend_90d", "op": "gte", "value": 20000}),
    (
        "spend < 1k within 30 days (incl. non-buyers)",
        {"field": "spend", "op": "lt", "value": 1000, "within_days": 30},
    ),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Result:
    backend: str
    members: int
    orders: int
    load_members_s: float = 0.0
    load_orders_s: float = 0.0
    index_s: float = 0.0
    rollup_s: float = 0.0
    recompute_s: float = 0.0
    rules_s: float = 0.0
    csv_rows_per_s: float = 0.0
    counts: dict[str, tuple[float, int]] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------ data
class Synthetic:
    """Deterministic synthetic members and orders (numpy, chunked)."""

    def __init__(self, members: int, orders: int, seed: int = 7) -> None:
        self.members = members
        self.orders = orders
        rng = np.random.default_rng(seed)
        self.rng = rng
        # 60% of members buy; order counts are heavy-tailed (a few buy very often).
        buyers = rng.random(members) < 0.6
        weights = np.where(buyers, rng.pareto(1.5, members) + 0.2, 0.0)
        counts = rng.multinomial(orders, weights / weights.sum())
        self.order_counts = counts
        self.languages = rng.choice(np.array(["ja", "en", "zh"]), members, p=[0.7, 0.1, 0.2])
        self.created = (NOW.timestamp() - rng.integers(0, 3 * 365 * DAY, members)).astype("int64")

    @staticmethod
    def ts(seconds: np.ndarray) -> list[str]:
        """SQLite's stored UTC format ('YYYY-MM-DD HH:MM:SS.ffffff')."""
        text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="us")
        return [t.replace("T", " ") for t in text.tolist()]

    def contact_chunks(self) -> Iterator[dict[str, list[Any]]]:
        rng = np.random.default_rng(11)
        for start in range(0, self.members, CHUNK):
            stop = min(start + CHUNK, self.members)
            ids = np.arange(start + 1, stop + 1)
            n = stop - start
            created = self.ts(self.created[start:stop])
            month = rng.integers(1, 13, n)
            day = rng.integers(1, 29, n)
            has_bday = rng.random(n) < 0.7
            opted = rng.random(n) < 0.02
            webchat = rng.random(n) < 0.3
            vip = rng.random(n) < 0.1
            sensitive = rng.random(n) < 0.05
            yield {
                "contacts": list(
                    zip(
                        ids.tolist(),
                        [f"member {i}" for i in ids.tolist()],
                        self.languages[start:stop].tolist(),
                        created,
                        created,
                        strict=True,
                    )
                ),
                "identities": [
                    (int(i), "telegram", str(10_000_000 + i), c)
                    for i, c in zip(ids.tolist(), created, strict=True)
                ]
                + [
                    (int(i), "webchat", f"w{i}", c)
                    for i, c, w in zip(ids.tolist(), created, webchat.tolist(), strict=True)
                    if w
                ],
                "profiles": [
                    (
                        int(i),
                        f"C{i}",
                        f"m{i}@example.com",
                        int(m) if b else None,
                        int(d) if b else None,
                        created[k] if o else None,
                        created[k],
                    )
                    for k, (i, m, d, b, o) in enumerate(
                        zip(
                            ids.tolist(),
                            month.tolist(),
                            day.tolist(),
                            has_bday.tolist(),
                            opted.tolist(),
                            strict=True,
                        )
                    )
                ],
                "tags": [
                    (int(i), "vip", "manual", c)
                    for i, c, v in zip(ids.tolist(), created, vip.tolist(), strict=True)
                    if v
                ]
                + [
                    (int(i), "sensitive-skin", "manual", c)
                    for i, c, s in zip(ids.tolist(), created, sensitive.tolist(), strict=True)
                    if s
                ],
            }

    def order_chunks(self) -> Iterator[list[tuple[Any, ...]]]:
        rng = np.random.default_rng(13)
        contact_ids = np.repeat(np.arange(1, self.members + 1), self.order_counts)
        created_of = np.repeat(self.created, self.order_counts)
        for start in range(0, len(contact_ids), CHUNK):
            cids = contact_ids[start : start + CHUNK]
            born = created_of[start : start + CHUNK]
            n = len(cids)
            span = np.maximum(NOW.timestamp() - born, DAY)
            when = (born + rng.random(n) * span).astype("int64")
            amount = np.round(rng.lognormal(8.2, 0.7, n), 0)
            oids = np.arange(start + 1, start + n + 1)
            yield list(
                zip(
                    oids.tolist(),
                    [f"O{i:010d}" for i in oids.tolist()],
                    cids.tolist(),
                    self.ts(when),
                    amount.tolist(),
                    strict=True,
                )
            )


# ------------------------------------------------------------------------------ loaders
def load_sqlite(path: str, data: Synthetic, result: Result) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA temp_store=MEMORY")
    started = time.perf_counter()
    for chunk in data.contact_chunks():
        conn.executemany(
            "INSERT INTO contacts (id, display_name, language, created_at, "
            "updated_at) VALUES (?,?,?,?,?)",
            chunk["contacts"],
        )
        conn.executemany(
            "INSERT INTO contact_identities (contact_id, platform, external_id, "
            "created_at) VALUES (?,?,?,?)",
            chunk["identities"],
        )
        conn.executemany(
            "INSERT INTO crm_profiles (contact_id, shop_customer_id, email, "
            "birth_month, birth_day, opted_out_at, favourite_products, updated_at)"
            " VALUES (?,?,?,?,?,?,'[]',?)",
            chunk["profiles"],
        )
        conn.executemany(
            "INSERT INTO crm_contact_tags (contact_id, tag, source, created_at) VALUES (?,?,?,?)",
            chunk["tags"],
        )
    conn.commit()
    result.load_members_s = time.perf_counter() - started
    log(f"sqlite: members loaded in {result.load_members_s:.1f}s")
    started = time.perf_counter()
    # Secondary indexes are rebuilt after the load (the usual bulk path).
    conn.execute("DROP INDEX ix_crm_orders_contact_id_ordered_at")
    conn.execute("DROP INDEX ix_crm_orders_ordered_at_contact_id")
    done = 0
    for rows in data.order_chunks():
        conn.executemany(
            "INSERT INTO crm_orders (id, external_id, contact_id, ordered_at, "
            "amount, created_at) VALUES (?,?,?,?,?,'2025-06-01 00:00:00.000000')",
            rows,
        )
        done += len(rows)
        if done % 2_000_000 < CHUNK:
            log(f"sqlite: {done:,} orders")
    conn.commit()
    result.load_orders_s = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute(
        "CREATE INDEX ix_crm_orders_contact_id_ordered_at ON crm_orders "
        "(contact_id, ordered_at, amount)"
    )
    conn.execute(
        "CREATE INDEX ix_crm_orders_ordered_at_contact_id ON crm_orders "
        "(ordered_at, contact_id, amount)"
    )
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    result.index_s = time.perf_counter() - started
    log(f"sqlite: orders loaded in {result.load_orders_s:.1f}s + index {result.index_s:.1f}s")


def _csv(rows: list[tuple[Any, ...]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


async def load_pg(schema: str, data: Synthetic, result: Result) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    try:
        # Synthetic rows are consistent by construction: skip per-row FK triggers.
        await conn.execute("SET session_replication_role = replica")
        started = time.perf_counter()
        for chunk in data.contact_chunks():
            await conn.copy_to_table(
                "contacts",
                source=io.BytesIO(_csv(chunk["contacts"])),
                columns=["id", "display_name", "language", "created_at", "updated_at"],
                format="csv",
            )
            await conn.copy_to_table(
                "contact_identities",
                source=io.BytesIO(_csv(chunk["identities"])),
                columns=["contact_id", "platform", "external_id", "created_at"],
                format="csv",
            )
            profiles = [(*r[:6], "[]", r[6]) for r in chunk["profiles"]]
            await conn.copy_to_table(
                "crm_profiles",
                source=io.BytesIO(_csv(profiles)),
                columns=[
                    "contact_id",
                    "shop_customer_id",
                    "email",
                    "birth_month",
                    "birth_day",
                    "opted_out_at",
                    "favourite_products",
                    "updated_at",
                ],
                format="csv",
            )
            await conn.copy_to_table(
                "crm_contact_tags",
                source=io.BytesIO(_csv(chunk["tags"])),
                columns=["contact_id", "tag", "source", "created_at"],
                format="csv",
            )
        result.load_members_s = time.perf_counter() - started
        log(f"pg: members loaded in {result.load_members_s:.1f}s")
        started = time.perf_counter()
        await conn.execute("DROP INDEX ix_crm_orders_contact_id_ordered_at")
        await conn.execute("DROP INDEX ix_crm_orders_ordered_at_contact_id")
        done = 0
        for rows in data.order_chunks():
            rows2 = [(*r, "2025-06-01 00:00:00+00") for r in rows]
            await conn.copy_to_table(
                "crm_orders",
                source=io.BytesIO(_csv(rows2)),
                columns=["id", "external_id", "contact_id", "ordered_at", "amount", "created_at"],
                format="csv",
            )
            done += len(rows)
            if done % 2_000_000 < CHUNK:
                log(f"pg: {done:,} orders")
        result.load_orders_s = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(
            "CREATE INDEX ix_crm_orders_contact_id_ordered_at ON crm_orders "
            "(contact_id, ordered_at, amount)"
        )
        await conn.execute(
            "CREATE INDEX ix_crm_orders_ordered_at_contact_id ON crm_orders "
            "(ordered_at, contact_id, amount)"
        )
        for tbl in ("contacts", "contact_identities", "crm_orders"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{tbl}', 'id'), "
                f"(SELECT max(id) FROM {tbl}))"
            )
        # What autovacuum does after a bulk load: statistics and the visibility map (which
        # lets the covering orders index answer "spend within N days" index-only).
        await conn.execute("VACUUM ANALYZE")
        result.index_s = time.perf_counter() - started
        log(f"pg: orders loaded in {result.load_orders_s:.1f}s + index {result.index_s:.1f}s")
    finally:
        await conn.close()


# ------------------------------------------------------------------------------ phases
async def measure(db: Database, result: Result, tmp: Path, repeats: int) -> None:
    crm = CrmService(db=db)
    log(f"{result.backend}: recompute...")
    rec = await crm.scoring.recompute(now=NOW)
    result.recompute_s, result.tiers = rec.seconds, rec.tiers
    log(f"{result.backend}: recompute {rec.seconds:.1f}s {rec.tiers}")
    for preset in ("repeat-buyer", "big-spender"):
        try:
            await crm.rules.add_preset(preset)
        except CrmError:  # a reused schema has them already
            pass
    started = time.perf_counter()
    await crm.rules.evaluate_all(now=NOW)
    result.rules_s = time.perf_counter() - started
    log(f"{result.backend}: 2 tag rules in {result.rules_s:.1f}s")
    if not db.is_sqlite:
        async with db.engine.connect() as conn:
            from sqlalchemy import text

            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
    for label, rule in SEGMENTS:
        await crm.segments.count(rule, now=NOW)  # warm-up (cache, plan)
        times = []
        count = None
        for _ in range(repeats):
            started = time.perf_counter()
            count = await crm.segments.count(rule, now=NOW)
            times.append(time.perf_counter() - started)
        assert count is not None
        result.counts[label] = (statistics.median(times), count.matching)
        log(
            f"{result.backend}: count '{label}': {statistics.median(times) * 1000:.0f} ms "
            f"({count.matching:,})"
        )
    # The real CSV importer on a small export (matching by shop id, validation, one txn).
    n = 20_000
    path = tmp / f"orders-{result.backend}.csv"
    run = uuid.uuid4().hex[:6]  # new order ids on every run (a reused schema has the old)
    with path.open("w", encoding="utf-8") as f:
        f.write("order_id,customer_id,ordered_at,amount\n")
        for i in range(n):
            f.write(
                f"CSV{run}-{i},C{i % result.members + 1},2025-05-{i % 28 + 1:02d} 12:00,"
                f"{1000 + i % 5000}\n"
            )
    started = time.perf_counter()
    report = await crm.importer.import_orders(path)
    assert report.ok, report.errors[:3]
    result.csv_rows_per_s = n / (time.perf_counter() - started)
    log(f"{result.backend}: CSV importer {result.csv_rows_per_s:,.0f} orders/s")


async def run_sqlite(data: Synthetic, tmp: Path, repeats: int) -> Result:
    result = Result("SQLite", data.members, data.orders)
    path = tmp / "crm_bench.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await db.upgrade()
        await db.dispose()
        await asyncio.to_thread(load_sqlite, str(path), data, result)
        db = Database(f"sqlite+aiosqlite:///{path}")
        await rebuild_rollup(db, result)
        await measure(db, result, tmp, repeats)
    finally:
        await db.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return result


async def rebuild_rollup(db: Database, result: Result) -> None:
    started = time.perf_counter()
    await rollup.rebuild(db)
    result.rollup_s = time.perf_counter() - started
    log(f"{result.backend}: order-month rollup rebuilt in {result.rollup_s:.1f}s")


async def run_pg(
    data: Synthetic, tmp: Path, repeats: int, keep: bool = False, reuse: str | None = None
) -> Result:
    import asyncpg

    result = Result("PostgreSQL", data.members, data.orders)
    schema = reuse or f"kz_crm_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_DSN)
    if reuse:
        if not await admin.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await admin.close()
            raise SystemExit(f"--reuse-pg: no schema {schema!r}")
        keep = True
        log(f"pg: reusing schema {schema} (no load; load figures are not measured)")
    else:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    url = "postgresql+asyncpg://" + PG_DSN.split("://", 1)[1]
    db = Database(url, schema=schema, pool_size=2)
    try:
        await db.upgrade()
        if not reuse:
            await load_pg(schema, data, result)
        await rebuild_rollup(db, result)
        await measure(db, result, tmp, repeats)
    finally:
        await db.dispose()
        if keep:
            log(f'pg: kept schema {schema} (drop it with: DROP SCHEMA "{schema}" CASCADE)')
        else:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            log(f"pg: dropped schema {schema}")
        await admin.close()
    return result


def table(results: list[Result]) -> str:
    head = ["", *[f"{r.backend} ({r.members:,} / {r.orders:,})" for r in results]]
    rows = [
        [
            "bulk load members (+identities, profiles, tags)",
            *[f"{r.load_members_s:.1f} s" for r in results],
        ],
        [
            "bulk load orders",
            *[
                f"{r.load_orders_s:.1f} s ({r.orders / max(r.load_orders_s, 1e-9):,.0f}/s)"
                for r in results
            ],
        ],
        ["build orders indexes + (VACUUM) ANALYZE", *[f"{r.index_s:.1f} s" for r in results]],
        [
            "rebuild order-month rollup (+ VACUUM ANALYZE)",
            *[f"{r.rollup_s:.1f} s" for r in results],
        ],
        [
            "CSV importer (20k orders, validated)",
            *[f"{r.csv_rows_per_s:,.0f} orders/s" for r in results],
        ],
        ["recompute tiers/LTV/KOC (all members)", *[f"{r.recompute_s:.1f} s" for r in results]],
        ["evaluate 2 tag rules", *[f"{r.rules_s:.1f} s" for r in results]],
    ]
    for label, _ in SEGMENTS:
        rows.append(
            [
                f"count: {label}",
                *[
                    f"{r.counts[label][0] * 1000:,.0f} ms ({r.counts[label][1]:,})"
                    for r in results
                ],
            ]
        )
    rows.append(
        [
            "tiers dormant/regular/good/best",
            *[
                "/".join(f"{r.tiers.get(t, 0):,}" for t in ("dormant", "regular", "good", "best"))
                for r in results
            ],
        ]
    )
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> None:
    data = Synthetic(args.members, args.orders)
    log(
        f"synthetic data: {args.members:,} members, {args.orders:,} orders "
        f"({int((data.order_counts > 0).sum()):,} buyers)"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="crm_bench_", dir=args.tmp) as tmp:
        if not args.no_sqlite:
            results.append(await run_sqlite(data, Path(tmp), args.repeats))
        if args.pg:
            results.append(
                await run_pg(data, Path(tmp), args.repeats, args.keep_pg, args.reuse_pg)
            )
    print(table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 members / 500,000 orders")
    parser.add_argument("--pg", action="store_true", help="also run on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    parser.add_argument(
        "--keep-pg",
        action="store_true",
        help="keep the PostgreSQL schema (to EXPLAIN queries); prints its name",
    )
    parser.add_argument(
        "--reuse-pg",
        metavar="SCHEMA",
        help="measure a schema kept by --keep-pg again (migrated, rollup rebuilt; no load); "
        "use the same --members/--orders",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per count")
    parser.add_argument("--tmp", help="folder for the SQLite file (default: system temp)")
    args = parser.parse_args()
    if args.quick:
        args.members, args.orders = 50_000, 500_000
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
