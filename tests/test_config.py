from __future__ import annotations

import pytest

from config import ConfigError, load_settings


def test_defaults_need_no_file_and_no_token(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.database.url.startswith("sqlite+aiosqlite:///")
    assert not s.telegram.enabled


def test_toml_then_env_override(monkeypatch, tmp_path):
    cfg = tmp_path / "k.toml"
    cfg.write_text('[web]\nport = 9000\n[telegram]\ntoken = "123:abc"\n', encoding="utf-8")
    monkeypatch.setenv("KIZUNA_WEB__PORT", "9100")
    s = load_settings(cfg)
    assert s.web.port == 9100
    assert s.telegram.enabled
    assert "123:abc" not in repr(s) and "123:abc" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[telegram]\nmode = "push"\n', "telegram.mode"),
        ('[web]\nport = "eighty"\n', "web.port"),
        ('[database]\nurl = "mysql://x"\n', "database.url"),
        ('[telegram]\ntoken = "nonsense"\n', "telegram.token"),
        ('[telegram]\napi_base_url = "ftp://x"\n', "telegram.api_base_url"),
        ('[telegarm]\ntoken = "1:a"\n', "telegarm"),
        ('[telegram]\ntoken = "1:a"\nmode = "webhook"\n', "telegram"),
    ],
)
def test_bad_values_name_the_key(tmp_path, toml, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert key in str(err.value)
    assert "nonsense" not in str(err.value)  # token values are never echoed


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[web\nport=1", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml")


def test_env_secret_is_secret(monkeypatch):
    monkeypatch.setenv("KIZUNA_TELEGRAM__TOKEN", "42:SECRETVALUE")
    s = load_settings()
    assert s.telegram.token is not None
    assert "SECRETVALUE" not in repr(s)


def test_example_config_is_valid():
    from pathlib import Path

    example = Path(__file__).parents[1] / "config" / "kizuna.example.toml"
    s = load_settings(example)
    assert s.web.port == 8080
