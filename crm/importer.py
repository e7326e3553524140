"""``crm import customers|orders``: a shop's CSV exports into profiles and orders.

The whole file is decoded (UTF-8, UTF-8 BOM, Shift_JIS/CP932, GB18030), parsed and
validated first; any error leaves the database untouched and the report lists every bad
line. Otherwise everything is written in one transaction. Re-importing is idempotent:
order ids are unique (an order already stored is skipped), customers are matched by shop
customer id, platform identity, e-mail or phone (normalised) and only changed fields are
written.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.normalise import (
    check_timezone,
    clean,
    decode_bytes,
    normalise_email,
    normalise_phone,
    parse_amount,
    parse_birthday,
    parse_bool,
    parse_datetime,
)
from crm.policy import CrmPolicy
from crm.rollup import add_orders as add_order_months
from models.contact import Contact, ContactIdentity
from models.crm import MemberProfile, Order
from models.db import Database

CHUNK = 500
PLATFORMS = ("telegram", "webchat", "line")

CUSTOMER_COLUMNS: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer_id", "shop_customer_id", "customer", "id", "顧客id", "会員id",
                    "会員番号", "顧客番号", "客户id", "会员id"),
    "name": ("name", "display_name", "full_name", "氏名", "名前", "お名前", "姓名", "名字"),
    "email": ("email", "e-mail", "mail", "メールアドレス", "メール", "邮箱", "电子邮件"),
    "phone": ("phone", "tel", "telephone", "mobile", "電話番号", "電話", "携帯", "手机", "电话"),
    "birthday": ("birthday", "birth_date", "date_of_birth", "dob", "誕生日", "生年月日", "生日"),
    "member_level": ("member_level", "level", "rank", "会員ランク", "ランク", "会员等级"),
    "favourite_products": ("favourite_products", "favorite_products", "favourites",
                           "favorites", "お気に入り", "お気に入り商品", "喜欢的商品"),
    "home_store": ("home_store", "store", "shop", "店舗", "よく行く店舗", "门店"),
    "language": ("language", "lang", "言語", "语言"),
    "timezone": ("timezone", "time_zone", "tz"),
    "consent": ("consent", "marketing_consent", "newsletter", "opt_in", "メール配信",
                "配信同意", "同意"),
    "platform": ("platform",),
    "platform_id": ("platform_id", "external_id", "platform_user_id"),
    **{f"{p}_id": (f"{p}_id", f"{p}_user_id") for p in PLATFORMS},
}
ORDER_COLUMNS: dict[str, tuple[str, ...]] = {
    "order_id": ("order_id", "order", "order_number", "order_no", "注文id", "注文番号",
                 "受注番号", "订单号", "订单id"),
    # 'id' alone is the order's id in an order export, not the customer's.
    "customer_id": tuple(c for c in CUSTOMER_COLUMNS["customer_id"] if c != "id"),
    "email": CUSTOMER_COLUMNS["email"],
    "phone": CUSTOMER_COLUMNS["phone"],
    "platform": ("platform",),
    "platform_id": ("platform_id", "external_id", "platform_user_id"),
    **{f"{p}_id": (f"{p}_id", f"{p}_user_id") for p in PLATFORMS},
    "ordered_at": ("ordered_at", "order_date", "date", "created_at", "purchased_at",
                   "注文日", "注文日時", "購入日", "下单时间", "订单日期"),
    "amount": ("amount", "total", "total_amount", "price", "金額", "合計", "合計金額",
               "金额", "总额"),
    "currency": ("currency", "通貨", "币种"),
    "store": ("store", "shop", "店舗", "门店"),
    "items": ("items", "products", "商品", "商品名"),
}


@dataclass
class Issue:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ImportReport:
    """What an import found and did; ``ok`` is False when nothing was written."""

    kind: str
    file: str
    encoding: str = ""
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    dry_run: bool = False
    #: members with new orders / whose first order this import brought (for automations).
    purchasers: set[int] = field(default_factory=set)
    first_orders: dict[int, datetime] = field(default_factory=dict)
    last_orders: dict[int, datetime] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.errors:
            return (f"{self.file}: {len(self.errors)} error(s) in {self.rows} row(s); nothing "
                    "was imported")
        verb = "would import" if self.dry_run else "imported"
        noun = "customers" if self.kind == "customers" else "orders"
        parts = [f"{self.created} new", f"{self.updated} updated" if self.kind == "customers"
                 else "", f"{self.unchanged} already there", f"{self.duplicates} duplicate "
                 "row(s) counted once"]
        return (f"{self.file} ({self.encoding}): {verb} {self.rows} row(s) of {noun}: "
                + ", ".join(p for p in parts if p))


class _Rows:
    """CSV rows as dicts of canonical column names, with their line numbers."""

    def __init__(self, text: str, columns: dict[str, tuple[str, ...]], report: ImportReport):
        header_line = text.split("\n", 1)[0]
        delimiter = ","  # from the header line: tab or semicolon only when it has no comma
        if "," not in header_line:
            delimiter = "\t" if "\t" in header_line else (";" if ";" in header_line else ",")
        self.reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        self.report = report
        try:
            header = next(self.reader)
        except StopIteration:
            header = []
        lookup = {alias.lower(): canon for canon, aliases in columns.items()
                  for alias in aliases}
        self.mapping: dict[int, str] = {}
        unknown = []
        for i, name in enumerate(header):
            key = clean(name).lower().replace(" ", "_")
            if key in lookup and lookup[key] not in self.mapping.values():
                self.mapping[i] = lookup[key]
            elif key:
                unknown.append(name)
        if unknown:
            report.warnings.append(Issue(1, f"ignored unknown column(s): {', '.join(unknown)}"))

    @property
    def columns(self) -> set[str]:
        return set(self.mapping.values())

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        line = self.reader.line_num + 1
        for record in self.reader:
            start, line = line, self.reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            yield start, {canon: record[i] if i < len(record) else ""
                          for i, canon in self.mapping.items()}


def _identity_key(row: dict[str, str]) -> tuple[str, str] | None:
    platform, ext = clean(row.get("platform")).lower(), clean(row.get("platform_id"))
    if platform and ext:
        return platform, ext
    for p in PLATFORMS:
        value = clean(row.get(f"{p}_id"))
        if value:
            return p, value
    return None


@dataclass
class _Keys:
    customer_id: str | None
    email: str | None
    phone: str | None
    identity: tuple[str, str] | None

    def any(self) -> bool:
        return bool(self.customer_id or self.email or self.phone or self.identity)

    def describe(self) -> str:
        if self.customer_id:
            return f"customer id {self.customer_id!r}"
        if self.identity:
            return f"{self.identity[0]}:{self.identity[1]}"
        return f"{self.email or self.phone!r}"


class _Matcher:
    """Finds existing members for many keys with a few IN queries."""

    def __init__(self) -> None:
        self.by_shop: dict[str, int] = {}
        self.by_email: dict[str, int] = {}
        self.by_phone: dict[str, int] = {}
        self.by_identity: dict[tuple[str, str], int] = {}

    async def load(self, session: AsyncSession, keys: list[_Keys]) -> None:
        shop = sorted({k.customer_id for k in keys if k.customer_id})
        emails = sorted({k.email for k in keys if k.email})
        phones = sorted({k.phone for k in keys if k.phone})
        idents = sorted({k.identity for k in keys if k.identity})
        P = MemberProfile
        for chunk in _chunks(shop):
            for cid, sid in await session.execute(
                    select(P.contact_id, P.shop_customer_id).where(P.shop_customer_id.in_(chunk))):
                if sid is not None:
                    self.by_shop[sid] = cid
        for chunk in _chunks(emails):
            for cid, email in await session.execute(
                    select(P.contact_id, P.email).where(P.email.in_(chunk)).order_by(P.contact_id)):
                if email is not None:
                    self.by_email.setdefault(email, cid)
        for chunk in _chunks(phones):
            for cid, phone in await session.execute(
                    select(P.contact_id, P.phone).where(P.phone.in_(chunk)).order_by(P.contact_id)):
                if phone is not None:
                    self.by_phone.setdefault(phone, cid)
        by_platform: dict[str, list[str]] = {}
        for platform, ext in idents:
            by_platform.setdefault(platform, []).append(ext)
        for platform, exts in by_platform.items():
            for chunk in _chunks(exts):
                for cid, ext in await session.execute(
                        select(ContactIdentity.contact_id, ContactIdentity.external_id).where(
                            ContactIdentity.platform == platform,
                            ContactIdentity.external_id.in_(chunk))):
                    self.by_identity[(platform, ext)] = cid

    def match(self, keys: _Keys) -> tuple[int | None, str | None]:
        """(contact id or None, error when keys point at different members)."""
        found: list[tuple[str, int]] = []
        if keys.customer_id and keys.customer_id in self.by_shop:
            found.append((f"customer id {keys.customer_id}", self.by_shop[keys.customer_id]))
        if keys.identity and keys.identity in self.by_identity:
            found.append((f"{keys.identity[0]}:{keys.identity[1]}",
                          self.by_identity[keys.identity]))
        if keys.email and keys.email in self.by_email:
            found.append((f"e-mail {keys.email}", self.by_email[keys.email]))
        if keys.phone and keys.phone in self.by_phone:
            found.append((f"phone {keys.phone}", self.by_phone[keys.phone]))
        ids = {cid for _, cid in found}
        if len(ids) > 1 and keys.customer_id and keys.customer_id in self.by_shop:
            # The shop's own id is authoritative; e-mail/phone may be shared by a family.
            strong = [f for f in found if not f[0].startswith(("e-mail", "phone"))]
            if len({cid for _, cid in strong}) == 1:
                return strong[0][1], None
        if len(ids) > 1:
            detail = ", ".join(f"{what} -> member {cid}" for what, cid in found)
            return None, f"matches different members ({detail}); link them first"
        return (found[0][1] if found else None), None

    def remember(self, keys: _Keys, contact_id: int) -> None:
        if keys.customer_id:
            self.by_shop[keys.customer_id] = contact_id
        if keys.email:
            self.by_email.setdefault(keys.email, contact_id)
        if keys.phone:
            self.by_phone.setdefault(keys.phone, contact_id)
        if keys.identity:
            self.by_identity[keys.identity] = contact_id


def _chunks(items: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _split_list(value: str) -> list[str]:
    return [x for x in (clean(v) for v in re.split(r"[|;、/]", value or "")) if x]


class CsvImporter:
    """Validates and imports customer and order CSV exports (see module docstring)."""

    def __init__(self, *, db: Database, policy: CrmPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or CrmPolicy()

    def _read(self, path: str | Path, data: bytes | None, encoding: str | None,
              report: ImportReport) -> str | None:
        if data is None:
            data = Path(path).read_bytes()
        try:
            text, report.encoding = decode_bytes(data, encoding)
        except ValueError as exc:
            report.errors.append(Issue(0, str(exc)))
            return None
        return text

    def _keys(self, row: dict[str, str], line: int, report: ImportReport) -> _Keys | None:
        ok = True
        email = phone = None
        try:
            email = normalise_email(row.get("email"))
        except ValueError as exc:
            report.errors.append(Issue(line, str(exc)))
            ok = False
        try:
            phone = normalise_phone(row.get("phone"), self.policy.default_country_code)
        except ValueError as exc:
            report.errors.append(Issue(line, str(exc)))
            ok = False
        keys = _Keys(clean(row.get("customer_id")) or None, email, phone, _identity_key(row))
        if ok and not keys.any():
            report.errors.append(Issue(line, "no customer id, e-mail, phone or platform id"))
            ok = False
        return keys if ok else None

    # ------------------------------------------------------------------ customers
    async def import_customers(self, path: str | Path, *, data: bytes | None = None,
                               encoding: str | None = None,
                               dry_run: bool = False) -> ImportReport:
        """Create or update members from a customer export (one transaction)."""
        report = ImportReport("customers", str(path), dry_run=dry_run)
        text = self._read(path, data, encoding, report)
        if text is None:
            return report
        rows = _Rows(text, CUSTOMER_COLUMNS, report)
        key_cols = {"customer_id", "email", "phone", "platform_id"} | {
            f"{p}_id" for p in PLATFORMS}
        if not rows.columns & key_cols:
            report.errors.append(Issue(1, "no key column: need customer_id, email, phone or "
                                       "platform + platform_id (or telegram_id, webchat_id)"))
            return report
        parsed: list[tuple[int, _Keys, dict[str, Any], str | None]] = []
        seen: dict[str, tuple[int, dict[str, Any]]] = {}
        for line, row in rows:
            report.rows += 1
            keys = self._keys(row, line, report)
            values: dict[str, Any] = {}
            bad = keys is None
            if clean(row.get("birthday")):
                try:
                    values["birth_year"], values["birth_month"], values["birth_day"] = (
                        parse_birthday(row["birthday"]))
                except ValueError as exc:
                    report.errors.append(Issue(line, f"birthday: {exc}"))
                    bad = True
            if clean(row.get("consent")):
                try:
                    values["marketing_consent"] = parse_bool(row["consent"])
                except ValueError as exc:
                    report.errors.append(Issue(line, f"consent: {exc}"))
                    bad = True
            if clean(row.get("timezone")):
                try:
                    values["timezone"] = check_timezone(clean(row["timezone"]))
                except ValueError as exc:
                    report.errors.append(Issue(line, str(exc)))
                    bad = True
            for column_name in ("member_level", "home_store"):
                if clean(row.get(column_name)):
                    values[column_name] = clean(row[column_name])[:128]
            if clean(row.get("favourite_products")):
                values["favourite_products"] = _split_list(row["favourite_products"])
            lang = clean(row.get("language")).lower()[:8] or None
            if bad or keys is None:
                continue
            if keys.email:
                values["email"] = keys.email
            if keys.phone:
                values["phone"] = keys.phone
            if keys.customer_id:
                values["shop_customer_id"] = keys.customer_id
            name = clean(row.get("name"))[:256] or None
            dedupe: str = (keys.customer_id or keys.email or keys.phone
                           or ":".join(keys.identity or ()))
            full = {**values, "_name": name, "_lang": lang, "_identity": keys.identity}
            if dedupe in seen:
                first_line, first_values = seen[dedupe]
                if first_values == full:
                    report.duplicates += 1
                    report.warnings.append(Issue(line, f"duplicate of line {first_line}; "
                                                 "counted once"))
                else:
                    report.errors.append(Issue(line, f"{keys.describe()} also on line "
                                               f"{first_line} with different values"))
                continue
            seen[dedupe] = (line, full)
            parsed.append((line, keys, {**values, "_lang": lang}, name))
        if report.errors:
            return report
        async with self.db.sessionmaker() as session, session.begin():
            matcher = _Matcher()
            await matcher.load(session, [k for _, k, _, _ in parsed])
            for line, keys, values, name in parsed:
                cid: int | None
                cid, problem = matcher.match(keys)
                if problem:
                    report.errors.append(Issue(line, problem))
                    continue
                lang = values.pop("_lang")
                if cid is None:
                    contact = Contact(display_name=name, language=lang)
                    session.add(contact)
                    await session.flush()
                    cid = contact.id
                    session.add(MemberProfile(contact_id=cid, **{"favourite_products": [],
                                                                 **values}))
                    report.created += 1
                else:
                    changed = await self._update_member(session, cid, values, name, lang,
                                                        keys, report, line)
                    if changed:
                        report.updated += 1
                    else:
                        report.unchanged += 1
                if keys.identity and keys.identity not in matcher.by_identity:
                    session.add(ContactIdentity(contact_id=cid, platform=keys.identity[0],
                                                external_id=keys.identity[1]))
                matcher.remember(keys, cid)
                await session.flush()
            if report.errors or dry_run:
                await session.rollback()
        if report.errors:
            report.created = report.updated = report.unchanged = 0
        return report

    async def _update_member(self, session: AsyncSession, cid: int, values: dict[str, Any],
                             name: str | None, lang: str | None, keys: _Keys,
                             report: ImportReport, line: int) -> bool:
        changed = False
        contact = await session.get(Contact, cid)
        assert contact is not None
        if name and contact.display_name != name:
            contact.display_name, changed = name, True
        if lang and contact.language != lang:
            contact.language, changed = lang, True
        prof = await session.get(MemberProfile, cid)
        if prof is None:
            prof = MemberProfile(contact_id=cid, favourite_products=[])
            session.add(prof)
            changed = True
        for key, value in values.items():
            if key == "shop_customer_id" and prof.shop_customer_id not in (None, value):
                report.warnings.append(Issue(line, f"member {cid} keeps shop id "
                                             f"{prof.shop_customer_id!r} (file: {value!r})"))
                continue
            if key == "marketing_consent" and value and prof.opted_out_at is not None:
                report.warnings.append(Issue(line, f"member {cid} opted out in chat; the "
                                             "file's consent does not override that"))
                continue
            if getattr(prof, key) != value:
                setattr(prof, key, value)
                changed = True
        return changed

    # ------------------------------------------------------------------ orders
    async def import_orders(self, path: str | Path, *, data: bytes | None = None,
                            encoding: str | None = None, dry_run: bool = False,
                            timezone: str | None = None) -> ImportReport:
        """Add orders from an order export; orders of unknown members are errors, and an
        order id already stored is skipped (one transaction)."""
        report = ImportReport("orders", str(path), dry_run=dry_run)
        tz = timezone or self.policy.default_timezone
        text = self._read(path, data, encoding, report)
        if text is None:
            return report
        rows = _Rows(text, ORDER_COLUMNS, report)
        missing = [c for c in ("order_id", "ordered_at", "amount") if c not in rows.columns]
        if missing:
            report.errors.append(Issue(1, f"missing column(s): {', '.join(missing)}"))
            return report
        parsed: list[tuple[int, _Keys, dict[str, Any]]] = []
        seen: dict[str, tuple[int, dict[str, Any], _Keys]] = {}
        for line, row in rows:
            report.rows += 1
            keys = self._keys(row, line, report)
            order_id = clean(row.get("order_id"))[:128]
            values: dict[str, Any] = {"external_id": order_id}
            bad = keys is None
            if not order_id:
                report.errors.append(Issue(line, "missing order id"))
                bad = True
            try:
                values["ordered_at"] = parse_datetime(row.get("ordered_at") or "", tz)
            except ValueError as exc:
                report.errors.append(Issue(line, f"order date: {exc}"))
                bad = True
            try:
                values["amount"] = parse_amount(row.get("amount") or "")
            except ValueError as exc:
                report.errors.append(Issue(line, f"amount: {exc}"))
                bad = True
            values["currency"] = clean(row.get("currency")).upper()[:8] or None
            values["store"] = clean(row.get("store"))[:128] or None
            values["items"] = _split_list(row.get("items") or "") or None
            if bad or keys is None:
                continue
            if order_id in seen:
                first_line, first_values, first_keys = seen[order_id]
                if first_values == values and first_keys == keys:
                    report.duplicates += 1
                    report.warnings.append(Issue(line, f"order {order_id} repeats line "
                                                 f"{first_line}; counted once"))
                else:
                    report.errors.append(Issue(line, f"order {order_id} also on line "
                                               f"{first_line} with different values"))
                continue
            seen[order_id] = (line, values, keys)
            parsed.append((line, keys, values))
        if report.errors:
            return report
        async with self.db.sessionmaker() as session, session.begin():
            matcher = _Matcher()
            await matcher.load(session, [k for _, k, _ in parsed])
            existing: dict[str, tuple[int, Decimal]] = {}
            ids = [v["external_id"] for _, _, v in parsed]
            for chunk in _chunks(ids):
                for ext, stored_cid, amount in await session.execute(
                        select(Order.external_id, Order.contact_id, Order.amount)
                        .where(Order.external_id.in_(chunk))):
                    existing[ext] = (stored_cid, Decimal(str(amount)))
            new_rows: list[dict[str, Any]] = []
            for line, keys, values in parsed:
                cid, problem = matcher.match(keys)
                if problem:
                    report.errors.append(Issue(line, problem))
                    continue
                if cid is None:
                    report.errors.append(Issue(line, f"unknown member {keys.describe()}: "
                                               "import customers first"))
                    continue
                if values["external_id"] in existing:
                    report.unchanged += 1
                    stored_cid, stored_amount = existing[values["external_id"]]
                    if stored_cid != cid or stored_amount != values["amount"]:
                        report.warnings.append(Issue(line, f"order {values['external_id']} "
                                                     "differs from the stored one; kept "
                                                     "the stored order"))
                    continue
                new_rows.append({**values, "contact_id": cid})
            if report.errors:
                await session.rollback()
                return report
            buyers = sorted({r["contact_id"] for r in new_rows})
            had_orders: set[int] = set()
            for chunk in _chunks(buyers):
                had_orders |= set((await session.execute(
                    select(Order.contact_id).where(Order.contact_id.in_(chunk)).distinct()
                )).scalars())
            for chunk in _chunks(new_rows, 5000):
                await session.execute(insert(Order), chunk)
            # The month rollup answers "spend/orders within N days"; same transaction.
            await add_order_months(session, [r["external_id"] for r in new_rows])
            report.created = len(new_rows)
            report.purchasers = set(buyers)
            for r in new_rows:
                last = report.last_orders.get(r["contact_id"])
                if last is None or r["ordered_at"] > last:
                    report.last_orders[r["contact_id"]] = r["ordered_at"]
                if r["contact_id"] not in had_orders:
                    first = report.first_orders.get(r["contact_id"])
                    if first is None or r["ordered_at"] < first:
                        report.first_orders[r["contact_id"]] = r["ordered_at"]
            if dry_run:
                await session.rollback()
        return report
