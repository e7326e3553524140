"""``kizuna crm ...``: import shop exports, member profiles, tags and rules, tiers, segments,
KOCs, link codes, opt-out and step sequences."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.cli.common import CliError, err, run_guarded, settings_from

Command = Callable[[argparse.Namespace], int]


_err = err


def _command(fn: Callable[[argparse.Namespace, Any], Awaitable[int]]) -> Command:
    """Open the CRM on the configured database, run ``fn``; every failure becomes one
    stderr line and exit code 1 (2 for configuration and usage errors)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            from crm import CrmError
        except ModuleNotFoundError as exc:
            _err(f"the crm package cannot be imported ({exc}); reinstall kizuna")
            return 1

        async def go() -> int:
            from crm import CrmPolicy, CrmService
            from models import Database

            settings = settings_from(args)
            db = Database(settings.database.url, echo=settings.database.echo)
            try:
                await db.upgrade()
                policy = CrmPolicy(default_timezone=settings.scheduler.timezone)
                service = CrmService(db=db, policy=policy)
                return await fn(args, service)
            finally:
                await db.dispose()

        return run_guarded(go, domain_errors=(CrmError,), first_line_only=True)

    return run


def _json_arg(value: str) -> Any:
    """A JSON text, or @FILE to read it from a file."""
    text = value
    if value.startswith("@"):
        text = Path(value[1:]).read_text(encoding="utf-8-sig")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                       f"{exc.colno}") from None


def _identity(value: str) -> tuple[str, str]:
    platform, sep, ext = value.partition(":")
    if not sep or not platform or not ext:
        raise CliError(f"expected PLATFORM:ID (e.g. telegram:12345), got {value!r}", 2)
    return platform, ext


def _dump(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


# ------------------------------------------------------------------------------ commands


@_command
async def cmd_import(args: argparse.Namespace, crm: Any) -> int:
    report = await crm.import_file(args.kind, args.file, dry_run=args.dry_run,
                                   encoding=args.encoding)
    for issue in report.errors[: args.max_errors]:
        print(f"{args.file}: {issue}", file=sys.stderr)
    if len(report.errors) > args.max_errors:
        print(f"... and {len(report.errors) - args.max_errors} more error(s)", file=sys.stderr)
    if args.verbose:
        for issue in report.warnings:
            print(f"{args.file}: warning: {issue}", file=sys.stderr)
    elif report.warnings:
        print(f"{len(report.warnings)} warning(s) (--verbose shows them)", file=sys.stderr)
    if not report.ok:
        _err(report.summary())
        return 1
    print(report.summary())
    return 0


@_command
async def cmd_profile(args: argparse.Namespace, crm: Any) -> int:
    view = await crm.members.profile(await crm.members.find(args.contact))
    if args.json:
        _dump(view.to_dict())
        return 0
    print(f"member {view.contact_id}: {view.display_name or '(no name)'}"
          f"  language={view.language or '-'}")
    for ident in view.identities:
        state = "" if ident["reachable"] else " (unreachable)"
        print(f"  {ident['platform']}:{ident['external_id']}{state}")
    fields = [("shop id", view.shop_customer_id), ("e-mail", view.email), ("phone", view.phone),
              ("birthday", view.birthday), ("level", view.member_level),
              ("home store", view.home_store), ("time zone", view.timezone),
              ("favourites", ", ".join(view.favourite_products) or None)]
    for label, value in fields:
        if value:
            print(f"  {label}: {value}")
    print(f"  marketing: {'yes' if view.marketable else 'NO (opted out / declined)'}")
    care = "  NEEDS CARE" if view.needs_care else ""
    print(f"tier: {view.tier}{care}  orders: {view.order_count}  spend: {view.total_spend:,.0f}"
          f"  KOC score: {view.koc_score:g}")
    if view.ltv:
        ltv = view.ltv
        print(f"LTV: {ltv['ltv']:,.0f} = avg order {ltv['avg_order_value']:,.0f} x "
              f"{ltv['purchases_per_year']:.2f} purchases/year x {ltv['expected_years']:g} years")
    else:
        print("LTV: not computed yet (run 'kizuna crm recompute')")
    print("tags: " + (", ".join(f"{t['tag']}" + ("" if t["source"] == "manual" else
                                                 f" [{t['source']}]") for t in view.tags)
                      or "-"))
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(view.timezone or crm.policy.default_timezone)
    for order in view.recent_orders:
        local = order.ordered_at.astimezone(zone)
        print(f"  order {order.external_id}  {local:%Y-%m-%d}  {order.amount:,.0f}"
              + (f"  {order.store}" if order.store else ""))
    return 0


@_command
async def cmd_tag(args: argparse.Namespace, crm: Any) -> int:
    if args.tag_command == "list":
        if args.contact:
            cid = await crm.members.find(args.contact)
            for tag in await crm.members.tags(cid):
                print(f"{tag['tag']}\t{tag['source']}")
        else:
            for tag, count in await crm.members.tag_counts():
                print(f"{tag}\t{count}")
        return 0
    cid = await crm.members.find(args.contact)
    for tag in args.tags:
        if args.tag_command == "add":
            changed = await crm.members.add_tag(cid, tag, actor="cli")
            print(f"{'added' if changed else 'already had'} {tag!r} on member {cid}")
        else:
            changed = await crm.members.remove_tag(cid, tag)
            print(f"{'removed' if changed else 'did not have'} {tag!r} on member {cid}")
    await crm.rules.evaluate_all()
    return 0


@_command
async def cmd_rules(args: argparse.Namespace, crm: Any) -> int:
    sub = args.rules_command
    if sub == "list":
        rules = await crm.rules.list_rules()
        if not rules:
            print("no rules (try 'kizuna crm rules preset repeat-buyer')")
        for rule in rules:
            state = "on " if rule.enabled else "off"
            print(f"{state} {rule.name:<20} tag={rule.tag:<18} "
                  f"{json.dumps(rule.definition, ensure_ascii=False)}")
        return 0
    if sub == "add":
        await crm.rules.create(args.name, args.tag, _json_arg(args.rule),
                               description=args.description, replace=args.replace)
        print(f"rule {args.name!r} saved")
    elif sub == "preset":
        await crm.rules.add_preset(args.preset)
        print(f"rule {args.preset!r} saved")
    elif sub == "delete":
        await crm.rules.delete(args.name)
        print(f"rule {args.name!r} deleted (its tags removed)")
        return 0
    elif sub in ("enable", "disable"):
        await crm.rules.set_enabled(args.name, sub == "enable")
        print(f"rule {args.name!r} {sub}d")
    for run in await crm.rules.evaluate_all():
        print(f"{run.rule}: +{run.added} -{run.removed} ({run.tag})")
    return 0


@_command
async def cmd_recompute(args: argparse.Namespace, crm: Any) -> int:
    report = await crm.refresh()
    r = report.recompute
    tiers = "  ".join(f"{k}={v}" for k, v in r.tiers.items())
    print(f"recomputed {r.members} member(s) in {r.seconds:.1f}s: {tiers}  "
          f"needs care={r.needs_care}")
    if report.referrals.joins or report.referrals.first_orders:
        print(f"referrals: +{report.referrals.joins} joins, +{report.referrals.first_orders} "
              f"first orders, {report.referrals.rewards} reward(s) recorded")
    for run in report.rules:
        print(f"rule {run.rule}: +{run.added} -{run.removed}")
    return 0


@_command
async def cmd_segments(args: argparse.Namespace, crm: Any) -> int:
    sub = args.seg_command
    segs = crm.segments
    if sub == "fields":
        from crm.rules import describe_fields

        print(describe_fields())
        return 0
    if sub == "create":
        await segs.create(args.name, _json_arg(args.rule), description=args.description,
                          replace=args.replace)
        count = await segs.count(args.name)
        print(f"segment {args.name!r} saved: {count.matching} member(s), "
              f"{count.marketable} reachable for drops")
    elif sub == "list":
        items = await segs.list_segments()
        if not items:
            print("no segments")
        for seg in items:
            count = await segs.count(seg)
            print(f"{seg.name:<24} {count.marketable:>8} reachable  "
                  f"{json.dumps(seg.definition, ensure_ascii=False)}")
    elif sub == "show":
        seg = await segs.get(args.name)
        count = await segs.count(seg)
        _dump({"name": seg.name, "description": seg.description, "definition": seg.definition,
               "matching": count.matching, "reachable": count.marketable})
    elif sub == "count":
        import time

        ref = _json_arg(args.rule) if args.rule else args.name
        if ref is None:
            raise CliError("give a segment NAME or --rule JSON", 2)
        started = time.perf_counter()
        count = await segs.count(ref)
        print(f"{count.matching} matching, {count.marketable} reachable "
              f"({(time.perf_counter() - started) * 1000:.0f} ms)")
    elif sub == "sample":
        ref = _json_arg(args.rule) if args.rule else args.name
        if ref is None:
            raise CliError("give a segment NAME or --rule JSON", 2)
        for m in await segs.sample(ref, limit=args.limit):
            print(f"{m.contact_id}\t{m.display_name or '-'}\t{m.language or '-'}\t{m.tier}\t"
                  f"{m.total_spend:,.0f}\tKOC {m.koc_score:g}")
    elif sub == "delete":
        await segs.delete(args.name)
        print(f"segment {args.name!r} deleted")
    return 0


@_command
async def cmd_koc(args: argparse.Namespace, crm: Any) -> int:
    if args.koc_command == "leaderboard":
        rows = await crm.koc.leaderboard(limit=args.limit)
        if not rows:
            print("no KOC activity yet")
        print(f"{'#':>3} {'member':>8} {'score':>7} joins orders helpful positive  name")
        for i, r in enumerate(rows, 1):
            print(f"{i:>3} {r.contact_id:>8} {r.score:>7g} {r.joins:>5} {r.first_orders:>6} "
                  f"{r.helpful_answers:>7} {r.positive_feedback:>8}  {r.display_name or '-'}")
    elif args.koc_command == "invite":
        cid = await crm.members.find(args.contact)
        crm.koc.bot_username = args.bot
        print(await crm.koc.invite_link(cid))
    elif args.koc_command == "sync":
        sync = await crm.koc.sync_referrals()
        print(f"referrals: +{sync.joins} joins, +{sync.first_orders} first orders, "
              f"{sync.rewards} reward(s) recorded")
    elif args.koc_command == "helpful":
        cid = await crm.members.find(args.contact)
        await crm.members.record_helpful_answer(cid, actor="cli")
        print(f"recorded a helpful answer by member {cid}")
    return 0


@_command
async def cmd_link_code(args: argparse.Namespace, crm: Any) -> int:
    if args.link_command == "issue":
        platform, ext = _identity(args.identity)
        code = await crm.members.issue_link_code(platform, ext)
        print(f"{code}  (valid {crm.policy.link_code_minutes} minutes; redeem it from the "
              "other account)")
    else:
        platform, ext = _identity(args.identity)
        result = await crm.members.redeem_link_code(args.code, platform, ext)
        if result.merged_contact_id is None:
            print(f"already linked: member {result.contact_id}")
        else:
            print(f"linked: member {result.merged_contact_id} merged into member "
                  f"{result.contact_id} ({result.moved_rows} row(s) moved)")
    return 0


@_command
async def cmd_optout(args: argparse.Namespace, crm: Any) -> int:
    cid = await crm.members.find(args.contact)
    if args.command_name == "optout":
        await crm.opt_out(cid, reason=args.reason)
        print(f"member {cid} opted out: no marketing messages")
    else:
        await crm.members.opt_in(cid)
        print(f"member {cid} opted in")
    return 0


@_command
async def cmd_event(args: argparse.Namespace, crm: Any) -> int:
    cid = await crm.members.find(args.contact)
    data = _json_arg(args.data) if args.data else None
    await crm.members.record_event(cid, args.kind, data, actor="cli")
    started, stopped = await crm.automations.on_event(cid, args.kind)
    print(f"recorded {args.kind!r} for member {cid}: {started} sequence(s) started, "
          f"{stopped} stopped")
    return 0


@_command
async def cmd_sequences(args: argparse.Namespace, crm: Any) -> int:
    auto = crm.automations
    sub = args.seq_command
    if sub == "list":
        items = await auto.list_sequences()
        if not items:
            print("no sequences")
        for seq, counts in items:
            state = "on " if seq.enabled else "off"
            steps = len(seq.definition["steps"])
            stats = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no enrolments"
            print(f"{state} {seq.name:<20} trigger={seq.trigger:<14} {steps} step(s)  {stats}")
    elif sub == "create":
        await auto.create_sequence(args.name, _json_arg(args.definition), replace=args.replace)
        print(f"sequence {args.name!r} saved")
    elif sub == "show":
        seq = await auto.get_sequence(args.name)
        _dump({"name": seq.name, "enabled": seq.enabled, **seq.definition})
    elif sub == "delete":
        await auto.delete_sequence(args.name)
        print(f"sequence {args.name!r} deleted")
    elif sub in ("enable", "disable"):
        await auto.set_enabled(args.name, sub == "enable")
        print(f"sequence {args.name!r} {sub}d")
    return 0


# ------------------------------------------------------------------------------ register


def _p(sub: Any, name: str, help_: str, desc: str | None = None, **kw: Any) -> Any:
    return sub.add_parser(name, help=help_, description=desc or help_[0].upper() + help_[1:]
                          + ".", **kw)


def register(sub: Any) -> None:
    """Add the ``crm`` command group."""
    crm = sub.add_parser(
        "crm", help="members: import, profiles, tags, tiers, segments, KOCs, sequences",
        description="Social CRM: one member across platforms, tags, tiers and LTV, KOCs, "
        "segments for drops and step sequences. CONTACT is a contact id, PLATFORM:ID "
        "(telegram:12345), shop:CUSTOMER_ID, an e-mail or a phone number.",
    )
    s = crm.add_subparsers(dest="crm_command", metavar="COMMAND")
    s.required = True

    p = _p(s, "import", "import a shop's customer or order CSV export",
           "Import customers (creates or updates members) or orders (adds purchases). The "
           "file is validated first (UTF-8, UTF-8 BOM, Shift_JIS/CP932 or GB18030); any error "
           "is reported with its line and nothing is imported. Re-importing is safe: an order "
           "id is stored once. Customer columns: customer_id,name,email,phone,birthday,"
           "member_level,favourite_products,home_store,language,timezone,consent,platform,"
           "platform_id (or telegram_id/webchat_id). Order columns: order_id,customer_id|email|"
           "phone|platform_id,ordered_at,amount,currency,store,items.")
    p.add_argument("kind", choices=("customers", "orders"))
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")
    p.add_argument("--encoding", help="text encoding (default: detected)")
    p.add_argument("--max-errors", type=int, default=50, help="errors to print (default 50)")
    p.add_argument("--verbose", "-v", action="store_true", help="print warnings too")
    p.set_defaults(func=cmd_import)

    p = _p(s, "profile", "show a member's profile, tier, LTV, tags and recent orders")
    p.add_argument("contact")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_profile)

    tag = _p(s, "tag", "add, remove or list manual tags")
    ts = tag.add_subparsers(dest="tag_command", metavar="COMMAND")
    ts.required = True
    for name in ("add", "remove"):
        p = _p(ts, name, f"{name} tags on a member")
        p.add_argument("contact")
        p.add_argument("tags", nargs="+", metavar="TAG")
        p.set_defaults(func=cmd_tag)
    p = _p(ts, "list", "list a member's tags, or every tag with its member count")
    p.add_argument("contact", nargs="?")
    p.set_defaults(func=cmd_tag)

    rules = _p(s, "rules", "automatic tag rules",
               "Automatic tags: members matching a rule (the segment rule JSON, see 'kizuna "
               "crm segments fields') get the tag; re-evaluated after imports, recompute and "
               "every change here.")
    rs = rules.add_subparsers(dest="rules_command", metavar="COMMAND")
    rs.required = True
    _p(rs, "list", "list rules").set_defaults(func=cmd_rules)
    p = _p(rs, "add", "add or replace a rule")
    p.add_argument("name")
    p.add_argument("--tag", required=True)
    p.add_argument("--rule", required=True, metavar="JSON|@FILE")
    p.add_argument("--description")
    p.add_argument("--replace", action="store_true")
    p.set_defaults(func=cmd_rules)
    p = _p(rs, "preset", "add a ready-made rule",
           "Add a ready-made rule: repeat-buyer (2+ orders in 90 days), sensitive-skin "
           "(asked about sensitive skin), complaint (complained in the last 90 days), "
           "big-spender (50,000+ in the last year).")
    p.add_argument("preset", metavar="PRESET")
    p.set_defaults(func=cmd_rules)
    for name in ("delete", "enable", "disable"):
        p = _p(rs, name, f"{name} a rule")
        p.add_argument("name")
        p.set_defaults(func=cmd_rules)
    _p(rs, "run", "re-evaluate every rule now").set_defaults(func=cmd_rules)

    p = _p(s, "recompute", "recompute tiers, LTV, needs-care and KOC scores",
           "Attribute referrals, recompute every member's RFM tier (dormant, regular, good, "
           "best), LTV factors, needs-care flag and KOC score, then re-run tag rules.")
    p.set_defaults(func=cmd_recompute)

    seg = _p(s, "segments", "saved rule-based segments (drop targets)")
    ss = seg.add_subparsers(dest="seg_command", metavar="COMMAND")
    ss.required = True
    p = _p(ss, "create", "save a segment",
           'Save a segment. Example rule: {"all": [{"field": "tier", "op": "in", "value": '
           '["best", "good"]}, {"field": "birthday_month", "op": "eq", "value": 6}]}. '
           "'kizuna crm segments fields' lists the fields and operators.")
    p.add_argument("name")
    p.add_argument("--rule", required=True, metavar="JSON|@FILE")
    p.add_argument("--description")
    p.add_argument("--replace", action="store_true")
    p.set_defaults(func=cmd_segments)
    _p(ss, "list", "list segments with their reachable counts").set_defaults(func=cmd_segments)
    _p(ss, "fields", "list rule fields and operators").set_defaults(func=cmd_segments)
    for name, help_ in (("show", "show a segment"), ("delete", "delete a segment")):
        p = _p(ss, name, help_)
        p.add_argument("name")
        p.set_defaults(func=cmd_segments)
    for name, help_ in (("count", "live count of a segment (or an unsaved --rule)"),
                        ("sample", "a sample of a segment's reachable members")):
        p = _p(ss, name, help_)
        p.add_argument("name", nargs="?")
        p.add_argument("--rule", metavar="JSON|@FILE", help="an unsaved rule")
        if name == "sample":
            p.add_argument("--limit", type=int, default=10)
        p.set_defaults(func=cmd_segments)

    koc = _p(s, "koc", "key opinion customers: leaderboard, invite links, referrals")
    ks = koc.add_subparsers(dest="koc_command", metavar="COMMAND")
    ks.required = True
    p = _p(ks, "leaderboard", "top members by KOC score")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_koc)
    p = _p(ks, "invite", "a member's personal invite link (/start ref-CODE)")
    p.add_argument("contact")
    p.add_argument("--bot", help="bot username for a t.me link")
    p.set_defaults(func=cmd_koc)
    _p(ks, "sync", "attribute referral joins and first orders now").set_defaults(func=cmd_koc)
    p = _p(ks, "helpful", "record a helpful answer in a group by a member")
    p.add_argument("contact")
    p.set_defaults(func=cmd_koc)

    link = _p(s, "link-code", "link two accounts of one person with a one-time code")
    ls = link.add_subparsers(dest="link_command", metavar="COMMAND")
    ls.required = True
    p = _p(ls, "issue", "issue a code to an account (PLATFORM:ID)")
    p.add_argument("identity", metavar="PLATFORM:ID")
    p.set_defaults(func=cmd_link_code)
    p = _p(ls, "redeem", "redeem a code from the other account: both become one member")
    p.add_argument("code")
    p.add_argument("identity", metavar="PLATFORM:ID")
    p.set_defaults(func=cmd_link_code)

    p = _p(s, "optout", "stop all marketing to a member (and their sequences)")
    p.add_argument("contact")
    p.add_argument("--reason")
    p.set_defaults(func=cmd_optout, command_name="optout")
    p = _p(s, "optin", "record a member's marketing consent")
    p.add_argument("contact")
    p.set_defaults(func=cmd_optout, command_name="optin")

    p = _p(s, "event", "record a member event (complaint, positive_feedback, joined_group...)",
           "Record an event; sequences it triggers start and those it stops stop.")
    p.add_argument("contact")
    p.add_argument("kind")
    p.add_argument("--data", metavar="JSON", help="extra data, e.g. '{\"intent\": \"x\"}'")
    p.set_defaults(func=cmd_event)

    seq = _p(s, "sequences", "step sequences (welcome, onboarding, win-back)",
             "Step sequences: started by an event, stopped by others; the bot's scheduler "
             "sends due steps within quiet hours and the frequency cap.")
    qs = seq.add_subparsers(dest="seq_command", metavar="COMMAND")
    qs.required = True
    _p(qs, "list", "list sequences and enrolments").set_defaults(func=cmd_sequences)
    p = _p(qs, "create", "save a sequence",
           'Save a sequence, e.g. {"trigger": "first_order", "stop_on": ["purchase", '
           '"opt_out"], "steps": [{"after_days": 0, "text": "Welcome {name}"}, '
           '{"after_days": 7, "text": "Your coupon: {coupon}", "coupon": "welcome"}]}.')
    p.add_argument("name")
    p.add_argument("definition", metavar="JSON|@FILE")
    p.add_argument("--replace", action="store_true")
    p.set_defaults(func=cmd_sequences)
    for name in ("show", "delete", "enable", "disable"):
        p = _p(qs, name, f"{name} a sequence")
        p.add_argument("name")
        p.set_defaults(func=cmd_sequences)
