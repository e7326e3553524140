"""``kizuna kb ...`` and ``kizuna nlu ...`` through ``bot.cli.main`` with a temp SQLite DB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli import main
from knowledge_base.service import SAMPLE_KB

CSV = (
    "id,language,question,alternatives,answer,tags,buttons\n"
    "shipping-fee,en,How much is shipping?,shipping cost|delivery fee,550 yen.,shipping,"
    "Track=https://x.example/t\n"
    "shipping-fee,ja,送料はいくらですか？,送料|配送料,550円です。,shipping,\n"
    "returns,en,Can I return a product?,send it back,Within 30 days.,returns,\n"
    "store-hours,ja,表参道店の営業時間は？,,11時から20時までです。,stores,\n"
)


@pytest.fixture
def cli_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed_data_dir: Callable[[Path], Path]
) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KIZUNA_CONFIG", raising=False)
    monkeypatch.setenv("KIZUNA_DATABASE__URL", f"sqlite:///{tmp_path / 'kb.db'}")
    data_dir = seed_data_dir(tmp_path / "data")
    monkeypatch.setenv("KIZUNA_KNOWLEDGE_BASE__DATA_DIR", str(data_dir))
    monkeypatch.setenv("KIZUNA_KNOWLEDGE_BASE__EMBEDDER", "hashing")
    monkeypatch.setenv("KIZUNA_KNOWLEDGE_BASE__SAMPLE", "none")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_import_is_idempotent_and_reports(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = _write(cli_env / "kb.csv", CSV)
    code, out, err = run(capsys, "kb", "import", str(csv_file))
    assert code == 0, err
    assert "4 rows, 3 entries, 0 errors" in out and "3 added, 0 updated, 0 unchanged" in out
    code, out, _ = run(capsys, "kb", "import", str(csv_file))
    assert code == 0 and "0 added, 0 updated, 3 unchanged" in out
    code, out, _ = run(capsys, "kb", "import", str(csv_file), "--dry-run")
    assert "dry run" in out


def test_a_bad_file_changes_nothing(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "kb", "import", str(_write(cli_env / "kb.csv", CSV)))
    _, before, _ = run(capsys, "kb", "export", "--format", "json")
    bad = CSV.replace("Within 30 days.", "") + "shipping-fee,en,Duplicate?,,x,,\n"
    code, out, err = run(capsys, "kb", "import", str(_write(cli_env / "bad.csv", bad)))
    assert code == 1
    assert "line 4: error: empty answer for 'returns' (en)" in err
    assert "line 6: error: duplicate id 'shipping-fee' (en): already on line 2" in err
    assert "nothing was imported" in err and "Traceback" not in err
    _, after, _ = run(capsys, "kb", "export", "--format", "json")
    assert after == before


def test_encodings_and_unreadable_files(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "kb", "import", str(_write(cli_env / "sj.csv", CSV, "cp932")))
    assert code == 0, err
    assert "shift_jis (cp932)" in out and "3 added" in out
    code, out, _ = run(capsys, "kb", "import", str(_write(cli_env / "bom.csv", CSV, "utf-8-sig")))
    assert code == 0 and "0 added, 0 updated, 3 unchanged" in out
    for name, data in (("empty.csv", b""), ("bin.csv", b"\x00\x01\x02\x03binary\x00")):
        (cli_env / name).write_bytes(data)
        code, out, err = run(capsys, "kb", "import", str(cli_env / name))
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    code, _, err = run(capsys, "kb", "import", str(cli_env / "missing.csv"))
    assert code == 1 and "file not found" in err
    broken = _write(cli_env / "broken.csv", 'id,question,answer\nk1,"never closed,x\n')
    code, _, err = run(capsys, "kb", "import", str(broken))
    assert code == 1 and "line 2: error: broken quotes" in err
    missing_col = _write(cli_env / "cols.csv", "id,question\nk1,q\n")
    code, _, err = run(capsys, "kb", "import", str(missing_col))
    assert code == 1 and "missing required column(s): answer" in err


@pytest.mark.parametrize("fmt", ["csv", "yaml", "json", "jsonl"])
def test_export_round_trip(
    fmt: str, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "kb", "import", str(SAMPLE_KB))
    assert code == 0, err
    target = cli_env / f"export.{fmt}"
    code, _, err = run(capsys, "kb", "export", "--output", str(target))
    assert code == 0 and f"({fmt})" in err
    code, out, err = run(capsys, "kb", "import", str(target))
    assert code == 0, err
    assert "0 added, 0 updated, 44 unchanged" in out


def test_replace_deactivates_missing_entries(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "kb", "import", str(_write(cli_env / "kb.csv", CSV)))
    only_returns = (
        "id,language,question,answer\nreturns,en,Can I return a product?,Within 30 days.\n"
    )
    code, out, _ = run(
        capsys, "kb", "import", str(_write(cli_env / "r.csv", only_returns)), "--replace"
    )
    assert code == 0 and "2 deactivated" in out
    _, out, _ = run(capsys, "kb", "list", "--active-only")
    assert "returns" in out and "shipping-fee" not in out


def test_editing_commands(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "kb", "add", "gift-wrap", "--question", "Do you gift wrap?",
        "--answer", "Yes, 330 yen.", "--alt", "Can you wrap my order?", "--tag", "gifts",
        "--button", "Order=https://x.example/o", "--lang", "en",
    )
    assert code == 0, err
    code, _, err = run(capsys, "kb", "add", "gift-wrap", "-q", "Again?", "-a", "x")
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "kb", "add", "bad", "-q", "Q?", "-a", "x", "--button", "Nope")
    assert code == 2 and "malformed buttons" in err
    code, _, _ = run(
        capsys, "kb", "edit", "gift-wrap", "--lang", "ja", "--question", "ラッピングできますか",
        "--answer", "はい、330円です。",
    )
    assert code == 0
    code, _, _ = run(capsys, "kb", "edit", "gift-wrap", "--answer", "Yes, 330 yen per order.")
    assert code == 0
    code, out, _ = run(capsys, "kb", "show", "gift-wrap")
    assert "[en] Do you gift wrap?" in out and "[ja] ラッピングできますか" in out
    assert "Yes, 330 yen per order." in out and "Order -> https://x.example/o" in out
    code, out, _ = run(capsys, "kb", "show", "gift-wrap", "--format", "json")
    assert json.loads(out)["translations"]["ja"]["answer"] == "はい、330円です。"
    code, out, _ = run(capsys, "kb", "list", "--lang", "ja", "--search", "ラッピング")
    assert "gift-wrap" in out and "1 entries" in out
    code, _, err = run(capsys, "kb", "list", "--lang", "xx")
    assert code == 2 and "bad language code" in err
    assert run(capsys, "kb", "deactivate", "gift-wrap")[0] == 0
    _, out, _ = run(capsys, "kb", "list")
    assert "inactive" in out
    assert run(capsys, "kb", "activate", "gift-wrap")[0] == 0
    assert run(capsys, "kb", "delete", "gift-wrap", "--lang", "ja")[0] == 0
    assert run(capsys, "kb", "delete", "gift-wrap")[0] == 0
    code, _, err = run(capsys, "kb", "show", "gift-wrap")
    assert code == 1 and err == "error: no entry 'gift-wrap'\n"
    code, _, err = run(capsys, "kb", "edit", "gift-wrap", "--answer", "x")
    assert code == 1 and "no entry" in err
    assert run(capsys, "kb", "deactivate", "gift-wrap")[0] == 1


def test_ask_and_reindex(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "kb", "import", str(_write(cli_env / "kb.csv", CSV)))
    code, out, err = run(capsys, "kb", "ask", "How much is shipping?")
    assert code == 0, err
    assert out.startswith("decision: answer") and "[shipping-fee, en]" in out
    assert "1. shipping-fee" in out and "score" in out
    code, out, _ = run(capsys, "kb", "ask", "送料はいくらですか？", "--lang", "ja", "--json")
    data = json.loads(out)
    assert data["kind"] == "answer" and data["entry"]["language"] == "ja"
    assert data["hits"][0]["key"] == "shipping-fee"
    code, out, _ = run(capsys, "kb", "ask", "😀😀😀")
    assert code == 0 and "handoff" in out and "no_text" in out
    code, out, _ = run(capsys, "kb", "reindex")
    assert code == 0 and "3 active entries" in out and "3 unchanged" in out
    code, out, _ = run(capsys, "kb", "reindex", "--full")
    assert code == 0 and "3 added" in out


def test_eval_with_a_faq_file_and_with_the_stored_kb(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faq = cli_env / "faq.jsonl"
    faq.write_text(
        "\n".join(
            json.dumps({"id": f"f{i}", "question": q, "answer": f"answer {i}"})
            for i, q in enumerate(
                ["How do I reset my password?", "How much is shipping to Osaka?",
                 "Can I return opened items?", "Do you have a store in Fukuoka?"]
            )
        )
        + "\n",
        encoding="utf-8",
    )
    rows = [
        ("reset my password", "f0", "val"), ("shipping to osaka price", "f1", "val"),
        ("return opened items", "f2", "val"), ("weather tomorrow", "oos", "val"),
        ("how to reset password", "f0", "test"), ("shipping Osaka cost", "f1", "test"),
        ("store in Fukuoka?", "f3", "test"), ("best pizza nearby", "oos", "test"),
    ]
    queries = cli_env / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"query": q, "faq_id": f, "split": s}) + "\n" for q, f, s in rows),
        encoding="utf-8",
    )
    code, out, err = run(capsys, "kb", "eval", str(queries), "--faq", str(faq))
    assert code == 0, err
    assert "built in memory" in out and "tuned on 4 'val' queries" in out
    assert "4 queries (3 in scope, 1 out of scope)" in out
    assert "P@1" in out and "MRR" in out and "OOS recall" in out
    assert "answer-or-hand-off acc" in out
    code, out, _ = run(capsys, "kb", "list")
    assert "no entries" in out  # --faq never touches the stored knowledge base
    run(capsys, "kb", "import", str(faq))
    test_only = cli_env / "test_only.jsonl"
    test_only.write_text(
        "".join(json.dumps({"query": q, "faq_id": f, "split": s}) + "\n"
                for q, f, s in rows if s == "test"),
        encoding="utf-8",
    )
    code, out, err = run(capsys, "kb", "eval", str(test_only))
    assert code == 0, err
    assert "thresholds: configured" in out and "stored (4 active entries)" in out
    code, _, err = run(capsys, "kb", "eval", str(test_only), "--split", "nope")
    assert code == 1 and "no rows with split 'nope'" in err


def test_gaps(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from knowledge_base.store import KnowledgeStore
    from models import Database

    code, out, _ = run(capsys, "kb", "gaps")
    assert code == 0 and "no unanswered" in out

    async def seed() -> None:
        db = Database(f"sqlite+aiosqlite:///{cli_env / 'kb.db'}")
        store = KnowledgeStore(db)
        for text in ("do you sell shampoo?", "do you sell shampoo", "do you sell shampoos?",
                     "is there parking near the store?"):
            await store.add_unanswered(
                question=text, language="en", contact_id=None, decision="handoff",
                confidence=0.1,
            )
        await db.dispose()

    asyncio.run(seed())
    code, out, err = run(capsys, "kb", "gaps", "--days", "7", "--top", "5")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "top 2 missing topics (the last 7 days):"
    assert lines[1].startswith(" 1. 3×") and "shampoo" in lines[1]
    code, _, err = run(capsys, "kb", "gaps", "--top", "0")
    assert code == 2 and "--top" in err


def test_nlu_eval_and_train(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    intents = {
        "greet": ["hello", "hi there", "good morning", "hey", "hello friend", "hi!"],
        "thanks": ["thank you", "thanks a lot", "many thanks", "thx", "thank you so much", "ty"],
        "order": ["where is my order", "track my order", "order status", "my order is late",
                  "has my order shipped", "order tracking"],
    }
    for intent, texts in intents.items():
        splits = ["train"] * 4 + ["val", "test"]
        rows += [
            {"text": t, "intent": intent, "split": s}
            for t, s in zip(texts, splits, strict=True)
        ]
    for t, s in (("what is the weather", "val"), ("play some music", "test"),
                 ("book a flight", "train")):
        rows.append({"text": t, "intent": "oos", "split": s})
    path = cli_env / "intents.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out, err = run(capsys, "nlu", "eval", str(path))
    assert code == 0, err
    assert "1 oos rows dropped" in out and "out-of-scope threshold:" in out
    assert "in-scope accuracy" in out and "OOS recall" in out and "macro-F1" in out
    code, _, err = run(capsys, "nlu", "eval", str(cli_env / "nope.jsonl"))
    assert code == 1 and "file not found" in err
    code, out, err = run(capsys, "nlu", "train")
    assert code == 0, err
    assert "10 intents" in out and "cached in" in out


SUBCOMMANDS = [
    ["kb"], ["kb", "import"], ["kb", "export"], ["kb", "list"], ["kb", "show"], ["kb", "add"],
    ["kb", "edit"], ["kb", "delete"], ["kb", "activate"], ["kb", "deactivate"], ["kb", "ask"],
    ["kb", "eval"], ["kb", "gaps"], ["kb", "reindex"], ["nlu"], ["nlu", "eval"],
    ["nlu", "train"],
]


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=lambda a: " ".join(a))
def test_every_subcommand_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kizuna") and len(out.splitlines()) > 3
