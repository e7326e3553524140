"""``kizuna kb ...`` (knowledge-base content, search, evaluation, gaps) and ``kizuna nlu ...``
(intent classifier training and evaluation)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from bot.cli.common import CliError, err, run_guarded, settings_from
from config import Settings

Command = Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------------ plumbing


_err = err


def _command(fn: Callable[[argparse.Namespace], Awaitable[int]]) -> Command:
    """Run an async command; turn every failure into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from knowledge_base.content import ContentError
        from knowledge_base.store import StoreError

        return run_guarded(lambda: fn(args), domain_errors=(ContentError, StoreError))

    return run


async def _open_db(settings: Settings) -> Any:
    from models import Database

    db = Database(settings.database.url, echo=settings.database.echo)
    await db.upgrade()
    return db


def _service(settings: Settings, db: Any, *, embedder: Any = None) -> Any:
    from knowledge_base.service import KnowledgeService

    return KnowledgeService(
        db=db,
        settings=settings.knowledge_base,
        embedder=embedder,
        default_language=settings.bot.default_language,
    )


async def _prepare(service: Any) -> None:
    """``ensure_ready`` with a note on stderr when the first run has to build the index."""
    await service.embedder()
    if not service.index_dir.exists():
        print("building the search index and intent model (first run; this can take a "
              "minute)...", file=sys.stderr)
    await service.ensure_ready()


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _reindex_hint() -> None:
    print("the search index refreshes on the bot's next start or 'kizuna kb reindex'")


# ------------------------------------------------------------------------------ register


def register(sub: Any) -> None:
    """Add the ``kb`` and ``nlu`` command groups."""
    kb = sub.add_parser(
        "kb",
        help="knowledge base: import, edit, ask, evaluate, find gaps",
        description="Manage the knowledge base (Q&A entries in ja/en/zh) and test its answers.",
    )
    kb_sub = kb.add_subparsers(dest="kb_command", metavar="COMMAND")
    kb_sub.required = True

    p = kb_sub.add_parser(
        "import",
        help="import entries from CSV, YAML, JSON or JSONL",
        description="Import entries from a file. The whole file is validated first and "
        "imported in one transaction: a file with errors changes nothing. Re-importing the "
        "same file changes nothing. CSV columns: id,language,question,alternatives,answer,"
        "tags,category,buttons,links,image_url,active (id, question and answer required; "
        "alternatives and tags separated by '|').",
    )
    p.add_argument("file", help="file to import (.csv, .tsv, .yaml, .yml, .json, .jsonl)")
    p.add_argument("--format", choices=("csv", "yaml", "json", "jsonl"),
                   help="file format (default: from the extension)")
    p.add_argument("--lang", help="language of rows without a language column "
                   "(default: detected from the question)")
    p.add_argument("--encoding", help="text encoding (default: UTF-8, UTF-8 with BOM, "
                   "Shift_JIS/CP932 or GB18030, detected)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and show what would change without writing")
    p.add_argument("--replace", action="store_true",
                   help="deactivate active entries that are not in the file")
    p.set_defaults(func=cmd_import)

    p = kb_sub.add_parser("export", help="export entries",
                          description="Write every entry (active and inactive) to a file "
                          "or to standard output.")
    p.add_argument("--format", choices=("csv", "yaml", "json", "jsonl"),
                   help="output format (default: from --output's extension, else yaml)")
    p.add_argument("--output", "-o", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("--active-only", action="store_true", help="only active entries")
    p.set_defaults(func=cmd_export)

    p = kb_sub.add_parser("list", help="list entries",
                          description="List entries: key, state, languages, category, "
                          "tags and the primary question.")
    p.add_argument("--lang", help="only entries with a translation in this language")
    p.add_argument("--tag", help="only entries with this tag or category")
    p.add_argument("--search", help="text to find in questions, alternatives or answers")
    p.add_argument("--active-only", action="store_true", help="hide inactive entries")
    p.set_defaults(func=cmd_list)

    p = kb_sub.add_parser("show", help="show one entry",
                          description="Show an entry with every translation.")
    p.add_argument("key")
    p.add_argument("--format", choices=("text", "yaml", "json"), default="text")
    p.set_defaults(func=cmd_show)

    for name in ("add", "edit"):
        helptext = "add an entry" if name == "add" else "change an entry"
        desc = (
            "Add an entry with its first translation."
            if name == "add"
            else "Change an entry. Translation options apply to --lang (default: the entry's "
            "primary language); a new language needs --question and --answer."
        )
        p = kb_sub.add_parser(name, help=helptext, description=desc)
        p.add_argument("key", help="stable entry id, e.g. shipping-fee")
        p.add_argument("--question", "-q", required=name == "add")
        p.add_argument("--answer", "-a", required=name == "add")
        p.add_argument("--alt", action="append", metavar="TEXT",
                       help="alternative phrasing (repeat; replaces the list on edit)")
        if name == "edit":
            p.add_argument("--clear-alts", action="store_true",
                           help="remove every alternative phrasing")
            p.add_argument("--primary", action="store_true",
                           help="make --lang the entry's primary language")
        p.add_argument("--tag", action="append", metavar="TAG",
                       help="tag (repeat; replaces the list on edit)")
        p.add_argument("--category")
        p.add_argument("--lang", help="language of the texts (ja, en, zh)"
                       + ("; default: detected from the question" if name == "add" else ""))
        p.add_argument("--button", action="append", metavar="TEXT=URL",
                       help="button: 'Label=https://...' or 'Label=callback:DATA' (repeat)")
        p.add_argument("--link", action="append", metavar="TITLE=URL",
                       help="link: 'Title=https://...' (repeat)")
        p.add_argument("--image", metavar="URL", help="image URL ('' to remove on edit)")
        if name == "add":
            p.add_argument("--inactive", action="store_true", help="add as inactive")
        p.set_defaults(func=cmd_add if name == "add" else cmd_edit)

    p = kb_sub.add_parser("delete", help="delete an entry (or one translation)",
                          description="Delete an entry with its translations, or with "
                          "--lang only that translation.")
    p.add_argument("key")
    p.add_argument("--lang", help="delete only this translation")
    p.set_defaults(func=cmd_delete)

    for name, active in (("activate", True), ("deactivate", False)):
        p = kb_sub.add_parser(
            name,
            help=f"{name} an entry",
            description=f"{name.capitalize()} an entry ("
            + ("it is answered again)." if active else "it is kept but never answered)."),
        )
        p.add_argument("key")
        p.set_defaults(func=cmd_activate if active else cmd_deactivate)

    p = kb_sub.add_parser("ask", help="ask the knowledge base a question",
                          description="Show what the bot would do with a question: answer, "
                          "suggest or hand off, with the matched entries and scores.")
    p.add_argument("text", help="the customer's question")
    p.add_argument("--lang", help="customer's platform language (ja, en, zh, zh-hans...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ask)

    p = kb_sub.add_parser(
        "eval",
        help="evaluate answers on labelled questions",
        description="Evaluate the knowledge base on labelled questions (JSONL: query, faq_id, "
        "split; faq_id 'oos' = should not be answered): P@1, MRR, OOS recall and "
        "answer-or-hand-off accuracy. Thresholds are tuned on the file's val split when it "
        "has one, else the configured ones are used.",
    )
    p.add_argument("queries", help="queries JSONL file")
    p.add_argument("--faq", metavar="FILE",
                   help="evaluate a knowledge base built in memory from this file (any import "
                   "format) instead of the stored one")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--val-split", default="val", help="split to tune thresholds on")
    p.add_argument("--val-file", metavar="FILE",
                   help="tune thresholds on this file's val split instead")
    p.add_argument("--save-thresholds", action="store_true",
                   help="keep the tuned thresholds for the stored knowledge base")
    p.set_defaults(func=cmd_eval)

    p = kb_sub.add_parser("gaps", help="top missing topics",
                          description="Cluster unanswered and down-voted questions into "
                          "topics the knowledge base is missing, biggest first.")
    p.add_argument("--days", type=int, default=30, help="look back N days (default 30; 0 = all)")
    p.add_argument("--top", type=int, default=10, help="how many topics (default 10)")
    p.add_argument("--similarity", type=float, default=None,
                   help="cosine similarity for questions to count as one topic (default 0.7)")
    p.set_defaults(func=cmd_gaps)

    p = kb_sub.add_parser("reindex", help="bring the search index up to date",
                          description="Update the search index from the active entries "
                          "(incremental), or rebuild it with --full.")
    p.add_argument("--full", action="store_true", help="drop the index and rebuild it")
    p.set_defaults(func=cmd_reindex)

    nlu = sub.add_parser("nlu", help="intent classifier: train and evaluate",
                         description="Intent classifier (small talk and routing intents).")
    nlu_sub = nlu.add_subparsers(dest="nlu_command", metavar="COMMAND")
    nlu_sub.required = True
    p = nlu_sub.add_parser(
        "eval",
        help="train and evaluate on an intent JSONL file",
        description="Train on the train split of an intent JSONL file (text, intent, split; "
        "intent 'oos' = out of scope), tune the out-of-scope threshold on the val split and "
        "report in-scope accuracy, OOS recall and macro-F1 on the test split.",
    )
    p.add_argument("file")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--test-split", default="test")
    p.add_argument("--oos-train", action="store_true",
                   help="train on 'oos' rows as an explicit class (default: drop them)")
    p.set_defaults(func=cmd_nlu_eval)
    p = nlu_sub.add_parser("train", help="train the bot's intent classifier",
                           description="Train the intent classifier on the bundled Rasa NLU "
                           "data (knowledge_base/nlu/intents.yml) and cache it.")
    p.set_defaults(func=cmd_nlu_train)


# ------------------------------------------------------------------------------ content


def _print_report(result: Any, out: TextIO) -> None:
    report = result.report(limit=100)
    if report:
        print(report, file=out)


@_command
async def cmd_import(args: argparse.Namespace) -> int:
    from knowledge_base.content import read_content
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    result = read_content(
        args.file, fmt=args.format, default_language=args.lang, encoding=args.encoding
    )
    enc = f", {result.encoding}" if result.encoding not in (None, "utf-8") else ""
    print(
        f"{args.file}: {result.format}{enc}, {result.rows} rows, {len(result.entries)} entries, "
        f"{len(result.errors)} errors, {len(result.warnings)} warnings"
    )
    if not result.ok:
        _print_report(result, sys.stderr)
        _err(f"{args.file} has {len(result.errors)} error(s); nothing was imported")
        return 1
    _print_report(result, sys.stdout)
    db = await _open_db(settings)
    try:
        stats = await KnowledgeStore(db).import_entries(
            result.entries, replace=args.replace, dry_run=args.dry_run
        )
    finally:
        await db.dispose()
    prefix = "dry run (nothing written): would be " if args.dry_run else ""
    print(prefix + stats.summary())
    if stats.changed and not args.dry_run:
        _reindex_hint()
    return 0


@_command
async def cmd_export(args: argparse.Namespace) -> int:
    from knowledge_base.content import dump_content
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    fmt = args.format
    if fmt is None and args.output:
        suffix = Path(args.output).suffix.lower().lstrip(".")
        fmt = {"yml": "yaml", "csv": "csv", "yaml": "yaml", "json": "json", "jsonl": "jsonl",
               "ndjson": "jsonl", "tsv": "csv"}.get(suffix)
    fmt = fmt or "yaml"
    db = await _open_db(settings)
    try:
        entries = await KnowledgeStore(db).all_entries(active_only=args.active_only)
    finally:
        await db.dispose()
    text = dump_content(entries, fmt)
    if args.output:
        out = Path(args.output)
        if out.parent and not out.parent.exists():
            raise CliError(f"directory does not exist: {out.parent}")
        out.write_text(text, encoding="utf-8")
        print(f"exported {len(entries)} entries to {out} ({fmt})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


@_command
async def cmd_list(args: argparse.Namespace) -> int:
    from knowledge_base.language import normalise_language_code
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    if args.lang and normalise_language_code(args.lang) is None:
        raise CliError(f"bad language code {args.lang!r} (use ja, en or zh)", 2)
    db = await _open_db(settings)
    try:
        entries = await KnowledgeStore(db).list_entries(
            language=args.lang, tag=args.tag, search=args.search, active_only=args.active_only
        )
    finally:
        await db.dispose()
    if not entries:
        print("no entries")
        return 0
    width = max(len(e.key) for e in entries)
    for e in entries:
        lang = normalise_language_code(args.lang) if args.lang else e.language
        tr = e.translations.get(lang or e.language) or e.primary
        state = "active  " if e.active else "inactive"
        langs = ",".join(sorted(e.translations, key=lambda x: (x != e.language, x)))
        tags = ",".join(e.tags)
        print(
            f"{e.key:<{width}}  {state}  {langs:<8}  {(e.category or '-'):<12}  "
            f"{_short(tr.question, 50)}" + (f"  [{tags}]" if tags else "")
        )
    print(f"{len(entries)} entries")
    return 0


def _format_pairs(items: Sequence[dict[str, str]], kind: str) -> str:
    parts = []
    for item in items:
        if kind == "buttons":
            target = item.get("url") or "callback:" + item.get("callback", "")
            parts.append(f"{item.get('text', '')} -> {target}")
        else:
            parts.append(f"{item.get('title', '')} -> {item['url']}".strip(" ->"))
    return "; ".join(parts)


@_command
async def cmd_show(args: argparse.Namespace) -> int:
    from knowledge_base.content import dump_content, entry_to_nested
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    db = await _open_db(settings)
    try:
        entry = await KnowledgeStore(db).get(args.key)
    finally:
        await db.dispose()
    if entry is None:
        raise CliError(f"no entry {args.key!r}")
    if args.format == "yaml":
        sys.stdout.write(dump_content([entry], "yaml"))
        return 0
    if args.format == "json":
        print(json.dumps(entry_to_nested(entry), ensure_ascii=False, indent=2))
        return 0
    print(f"id:       {entry.key}")
    print(f"state:    {'active' if entry.active else 'inactive'}")
    print(f"primary:  {entry.language}")
    print(f"category: {entry.category or '-'}")
    print(f"tags:     {', '.join(entry.tags) or '-'}")
    if entry.image_url:
        print(f"image:    {entry.image_url}")
    for tr in entry.translations.values():
        print(f"\n[{tr.language}] {tr.question}")
        for alt in tr.alternatives:
            print(f"  also: {alt}")
        for line in tr.answer.splitlines():
            print(f"  > {line}")
        if tr.buttons:
            print(f"  buttons: {_format_pairs(tr.buttons, 'buttons')}")
        if tr.links:
            print(f"  links: {_format_pairs(tr.links, 'links')}")
    return 0


def _pairs(values: list[str] | None, kind: str) -> list[dict[str, str]] | None:
    if values is None:
        return None
    from knowledge_base.content import _button_from_pair, _link_from_pair, _pairs_cell

    out: list[dict[str, str]] = []
    for value in values:
        try:
            pairs = _pairs_cell(value, kind)
        except ValueError as exc:
            raise CliError(f"malformed {exc}", 2) from None
        for pair in pairs:
            out.append(_button_from_pair(pair) if kind == "buttons" else _link_from_pair(pair))
    return out


@_command
async def cmd_add(args: argparse.Namespace) -> int:
    from knowledge_base.content import EntryData, TranslationData
    from knowledge_base.language import detect_language, normalise_language_code
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    if args.lang:
        lang = normalise_language_code(args.lang)
        if lang is None:
            raise CliError(f"bad language code {args.lang!r} (use ja, en or zh)", 2)
    else:
        lang = detect_language(args.question) or settings.bot.default_language
    tr = TranslationData(
        language=lang,
        question=args.question.strip(),
        answer=args.answer.strip(),
        alternatives=[a.strip() for a in args.alt or [] if a.strip()],
        buttons=_pairs(args.button, "buttons") or [],
        links=_pairs(args.link, "links") or [],
    )
    entry = EntryData(
        key=args.key.strip(),
        language=lang,
        translations={lang: tr},
        tags=[t.strip() for t in args.tag or [] if t.strip()],
        category=(args.category or "").strip() or None,
        image_url=(args.image or "").strip() or None,
        active=not args.inactive,
    )
    db = await _open_db(settings)
    try:
        await KnowledgeStore(db).add(entry)
    finally:
        await db.dispose()
    print(f"added {entry.key} ({lang})")
    _reindex_hint()
    return 0


@_command
async def cmd_edit(args: argparse.Namespace) -> int:
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    alternatives = [] if args.clear_alts else args.alt
    db = await _open_db(settings)
    try:
        entry = await KnowledgeStore(db).edit(
            args.key,
            language=args.lang,
            question=args.question,
            answer=args.answer,
            alternatives=alternatives,
            buttons=_pairs(args.button, "buttons"),
            links=_pairs(args.link, "links"),
            tags=args.tag,
            category=args.category,
            image_url=args.image,
            primary=args.primary,
        )
    finally:
        await db.dispose()
    print(f"updated {entry.key} ({', '.join(entry.translations)})")
    _reindex_hint()
    return 0


@_command
async def cmd_delete(args: argparse.Namespace) -> int:
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    db = await _open_db(settings)
    try:
        store = KnowledgeStore(db)
        if args.lang:
            done = await store.delete_translation(args.key, args.lang)
            what = f"the {args.lang} translation of {args.key}"
        else:
            done = await store.delete(args.key)
            what = args.key
    finally:
        await db.dispose()
    if not done:
        raise CliError(f"no entry {args.key!r}" + (f" in {args.lang}" if args.lang else ""))
    print(f"deleted {what}")
    _reindex_hint()
    return 0


async def _set_active(args: argparse.Namespace, active: bool) -> int:
    from knowledge_base.store import KnowledgeStore

    settings = settings_from(args)
    db = await _open_db(settings)
    try:
        done = await KnowledgeStore(db).set_active(args.key, active)
    finally:
        await db.dispose()
    if not done:
        raise CliError(f"no entry {args.key!r}")
    print(f"{'activated' if active else 'deactivated'} {args.key}")
    _reindex_hint()
    return 0


@_command
async def cmd_activate(args: argparse.Namespace) -> int:
    return await _set_active(args, True)


@_command
async def cmd_deactivate(args: argparse.Namespace) -> int:
    return await _set_active(args, False)


# ------------------------------------------------------------------------------ ask / eval


def _answer_json(answer: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "kind": str(answer.kind),
        "confidence": round(answer.confidence, 4),
        "language": answer.language,
        "reason": answer.reason,
        "intent": None
        if answer.intent is None
        else {"intent": answer.intent.intent, "confidence": round(answer.intent.confidence, 4)},
        "entry": asdict(answer.entry) if answer.entry else None,
        "suggestions": [asdict(s) for s in answer.suggestions],
        "hits": [
            {"key": h.key, "score": round(h.score, 4), "dense": round(h.dense, 4),
             "lexical": round(h.lexical, 4), "matched_text": h.matched_text}
            for h in answer.hits
        ],
    }


@_command
async def cmd_ask(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    db = await _open_db(settings)
    try:
        service = _service(settings, db)
        await _prepare(service)
        answer = await service.answer(args.text, language=args.lang)
    finally:
        await db.dispose()
    if args.json:
        print(json.dumps(_answer_json(answer), ensure_ascii=False, indent=2))
        return 0
    print(f"decision: {answer.kind} (confidence {answer.confidence:.2f}), reply in "
          f"{answer.language}" + (f", reason: {answer.reason}" if answer.reason else ""))
    if answer.intent is not None:
        print(f"intent:   {answer.intent.intent} ({answer.intent.confidence:.2f})")
    if answer.entry is not None:
        e = answer.entry
        print(f"answer:   [{e.key}, {e.language}] {e.question}")
        for line in e.answer.splitlines():
            print(f"  {line}")
        if e.buttons:
            print(f"  buttons: {_format_pairs(e.buttons, 'buttons')}")
        if e.links:
            print(f"  links: {_format_pairs(e.links, 'links')}")
    for s in answer.suggestions:
        print(f"suggest:  [{s.key}, {s.language}] {s.question}")
    th = service.policy.thresholds if service.ready else None
    if answer.hits:
        print("hits:" + (f" ({th.describe()})" if th else ""))
        for n, h in enumerate(answer.hits, 1):
            print(f"  {n}. {h.key:<28} score {h.score:.3f}  dense {h.dense:.3f}  "
                  f"lexical {h.lexical:.3f}  \"{_short(h.matched_text, 50)}\"")
    return 0


def _read_labelled(path: str, split: str) -> list[tuple[str, str | None, str | None]]:
    """(query, faq_id or None, language) rows of one split."""
    from knowledge_base.evaluation import OOS
    from knowledge_base.language import detect_language, normalise_language_code

    rows: list[tuple[str, str | None, str | None]] = []
    file = Path(path)
    if not file.is_file():
        raise CliError(f"file not found: {path}")
    with file.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                query = str(row["query"])
            except (ValueError, KeyError, TypeError):
                raise CliError(
                    f"{path}:{n}: expected a JSON object with query, faq_id, split"
                ) from None
            if row.get("split") != split:
                continue
            fid = row.get("faq_id")
            label = None if fid in (None, OOS) else str(fid)
            lang = normalise_language_code(row.get("lang") or row.get("language")) or (
                detect_language(query)
            )
            rows.append((query, label, lang))
    return rows


def _print_metrics(title: str, m: dict[str, float]) -> None:
    print(
        f"{title:<8} n={int(m['n']):<4} P@1 {m['p_at_1']:.3f}  MRR {m['mrr']:.3f}  "
        f"R@5 {m['recall_at_5']:.3f}  OOS recall {m['oos_recall']:.3f}  "
        f"answer-or-hand-off acc {m['answer_or_handoff_accuracy']:.3f}  "
        f"answer precision {m['answer_precision']:.3f}  answer rate {m['answer_rate']:.3f}"
    )


@_command
async def cmd_eval(args: argparse.Namespace) -> int:
    from knowledge_base.content import read_content
    from knowledge_base.decision import DecisionPolicy
    from knowledge_base.evaluation import evaluate_faq_hits
    from knowledge_base.retrieval import HybridRetriever
    from knowledge_base.service import entry_document

    settings = settings_from(args)
    test = _read_labelled(args.queries, args.split)
    if not test:
        raise CliError(f"{args.queries} has no rows with split {args.split!r}")
    val = _read_labelled(args.val_file or args.queries, args.val_split)
    if args.val_file and not val:
        raise CliError(f"{args.val_file} has no rows with split {args.val_split!r}")
    db = await _open_db(settings)
    try:
        service = _service(settings, db)
        if args.faq:
            result = read_content(args.faq)
            if not result.ok:
                _print_report(result, sys.stderr)
                raise CliError(f"{args.faq} has {len(result.errors)} error(s)")
            embedder = await service.embedder()
            retriever = HybridRetriever(embedder=embedder, index_dir=None)
            docs = [entry_document(e) for e in result.entries if e.active is not False]
            await asyncio.to_thread(retriever.sync, docs)
            print(f"knowledge base: {args.faq} ({len(docs)} entries, built in memory)")
            policy = DecisionPolicy.from_defaults(embedder.name)
            source = f"configured (defaults for {embedder.name})"
            kb = settings.knowledge_base
            if kb.answer_threshold is not None or kb.suggest_threshold is not None:
                policy = DecisionPolicy(
                    policy.thresholds.with_scores(kb.answer_threshold, kb.suggest_threshold),
                    policy.calibrator,
                )
                source = "configured (settings)"
        else:
            await _prepare(service)
            retriever = service.retriever
            embedder = await service.embedder()
            print(f"knowledge base: stored ({len(retriever)} active entries)")
            policy = service.policy
            source = f"configured ({service.thresholds_source})"
        known = set(retriever.keys())
        missing = sorted({lab for _, lab, _ in test if lab is not None and lab not in known})
        if missing:
            print(f"warning: {len(missing)} labelled ids are not in the knowledge base "
                  f"(e.g. {', '.join(missing[:3])})", file=sys.stderr)
        print(f"embedder: {embedder.name}")
        if val:
            val_hits = await asyncio.to_thread(
                lambda: [retriever.search(q, k=10) for q, _, _ in val]
            )
            policy = DecisionPolicy.tune_from_hits(val_hits, [lab for _, lab, _ in val])
            where = args.val_file or args.queries
            source = f"tuned on {len(val)} {args.val_split!r} queries of {where}"
            if args.save_thresholds and not args.faq:
                service.save_policy(policy, source=str(where))
                source += " (saved)"
        print(f"thresholds: {source}: {policy.thresholds.describe()}")
        hits = await asyncio.to_thread(lambda: [retriever.search(q, k=10) for q, _, _ in test])
    finally:
        await db.dispose()
    labels = [lab for _, lab, _ in test]
    n_oos = sum(1 for lab in labels if lab is None)
    print(f"split {args.split!r}: {len(test)} queries ({len(test) - n_oos} in scope, "
          f"{n_oos} out of scope)")
    _print_metrics("all", evaluate_faq_hits(hits, labels, policy))
    langs = sorted({lang for _, _, lang in test if lang})
    if len(langs) > 1:
        for lang in langs:
            idx = [i for i, (_, _, la) in enumerate(test) if la == lang]
            _print_metrics(lang, evaluate_faq_hits([hits[i] for i in idx],
                                                   [labels[i] for i in idx], policy))
    return 0


# ------------------------------------------------------------------------------ gaps / index


@_command
async def cmd_gaps(args: argparse.Namespace) -> int:
    from knowledge_base.gaps import DEFAULT_SIMILARITY, find_gaps

    if args.top < 1:
        raise CliError("--top must be at least 1", 2)
    if args.days < 0:
        raise CliError("--days must be 0 (all) or more", 2)
    settings = settings_from(args)
    db = await _open_db(settings)
    try:
        service = _service(settings, db)
        embedder = await service.embedder()
        gaps = await find_gaps(
            service.store,
            embedder,
            days=args.days or None,
            top=args.top,
            similarity=args.similarity if args.similarity is not None else DEFAULT_SIMILARITY,
        )
    finally:
        await db.dispose()
    period = f"the last {args.days} days" if args.days else "all time"
    if not gaps:
        print(f"no unanswered or down-voted questions in {period}")
        return 0
    print(f"top {len(gaps)} missing topics ({period}):")
    for n, gap in enumerate(gaps, 1):
        langs = ", ".join(f"{k} {v}" for k, v in gap.languages.items())
        extra = f"; down-voted answers: {', '.join(gap.entry_keys)}" if gap.entry_keys else ""
        print(f"{n:>2}. {gap.count}× \"{_short(gap.label, 70)}\"  ({gap.unanswered} unanswered, "
              f"{gap.downvoted} down-voted; {langs}{extra})")
        for ex in gap.examples[1:]:
            print(f"      e.g. \"{_short(ex, 70)}\"")
    return 0


@_command
async def cmd_reindex(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    db = await _open_db(settings)
    try:
        service = _service(settings, db)
        await service.embedder()
        if args.full and service.index_dir.exists():
            shutil.rmtree(service.index_dir)
        await _prepare(service)  # syncs the index with the active entries
        stats = service.last_sync
        n = len(service.retriever)
    finally:
        await db.dispose()
    print(f"index: {n} active entries ({stats.added} added, {stats.updated} updated, "
          f"{stats.removed} removed, {stats.unchanged} unchanged)")
    return 0


# ------------------------------------------------------------------------------ nlu


@_command
async def cmd_nlu_eval(args: argparse.Namespace) -> int:
    from knowledge_base.evaluation import evaluate_intents, load_intent_jsonl
    from knowledge_base.intents import IntentClassifier

    settings = settings_from(args)
    if not Path(args.file).is_file():
        raise CliError(f"file not found: {args.file}")
    train = load_intent_jsonl(args.file, args.train_split)
    val = load_intent_jsonl(args.file, args.val_split)
    test = load_intent_jsonl(args.file, args.test_split)
    if not train:
        raise CliError(f"{args.file} has no rows with split {args.train_split!r}")
    if not test:
        raise CliError(f"{args.file} has no rows with split {args.test_split!r}")
    examples: dict[str, list[str]] = {}
    dropped = 0
    for text, label in train:  # type: ignore[misc]
        if label is None:
            if not args.oos_train:
                dropped += 1
                continue
            label = "oos"
        examples.setdefault(label, []).append(text)
    service = _service(settings, None)
    embedder = await service.embedder()
    print(f"{args.file}: train {len(train) - dropped} ({len(examples)} intents"
          + (f", {dropped} oos rows dropped" if dropped else "") + f"), val {len(val)}, "
          f"test {len(test)}; embedder {embedder.name}")
    clf = IntentClassifier(embedder=embedder)
    await asyncio.to_thread(clf.fit, examples)
    if val and any(lab is None for _, lab in val):  # type: ignore[misc]
        t = await asyncio.to_thread(clf.tune_threshold, val)  # type: ignore[arg-type]
        print(f"out-of-scope threshold: {t:.4f} (tuned on {args.val_split!r})")
    else:
        print("out-of-scope threshold: none (no out-of-scope rows in the val split)")
    m = await asyncio.to_thread(evaluate_intents, clf, test)  # type: ignore[arg-type]
    print(f"test ({int(m['n'])} rows, {int(m['n_oos'])} out of scope):")
    print(f"  in-scope accuracy {m['in_scope_accuracy']:.4f}")
    print(f"  OOS recall        {m['oos_recall']:.4f}" + ("" if m["n_oos"] else " (no oos rows)"))
    print(f"  OOS precision     {m['oos_precision']:.4f}")
    print(f"  macro-F1          {m['macro_f1']:.4f}")
    print(f"  accuracy          {m['accuracy']:.4f}")
    return 0


@_command
async def cmd_nlu_train(args: argparse.Namespace) -> int:
    from knowledge_base.intents import load_rasa_nlu

    settings = settings_from(args)
    service = _service(settings, None)
    embedder = await service.embedder()
    examples = load_rasa_nlu(service.nlu_path)
    clf = await asyncio.to_thread(service.train_classifier)
    path, _ = service._classifier_dir(embedder)
    n = sum(len(v) for v in examples.values())
    print(f"trained on {n} examples of {len(clf.intents)} intents ({embedder.name}); "
          f"cached in {path}")
    return 0
