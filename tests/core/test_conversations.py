import json
import os

import pytest

from studio.core.conversations import (
    BUILTIN_PRESETS,
    Conversation,
    ConversationStore,
    Message,
    PresetStore,
    to_markdown,
)
from studio.core.errors import UserError
from studio.core.jobs import Decoding


def _conversation():
    return Conversation(
        title="Castle prompts",
        model="prompt-writer",
        system="You write image prompts.",
        messages=[
            Message("user", "a castle"),
            Message("assistant", "a castle on a hill, golden hour", {"tokens_per_s": 41.5, "ttft_s": 0.02}),
            Message("notice", "Dropped the 2 oldest messages to fit the model's context of 64 tokens."),
            Message("user", "more fog"),
            Message("assistant", "a castle in fog", {"tokens_per_s": 40.0, "ttft_s": 0.03, "stopped": True}),
        ],
    )


def test_round_trip_and_listing_order(tmp_path):
    store = ConversationStore(tmp_path)
    older = Conversation(title="older")
    store.save(older)
    conv = _conversation()
    store.save(conv)
    loaded = store.load(conv.id)
    assert loaded == conv
    assert [c.id for c in store.list()] == [conv.id, older.id]
    # Notices are shown but never sent to the model.
    assert loaded.turns() == (
        ("user", "a castle"),
        ("assistant", "a castle on a hill, golden hour"),
        ("user", "more fog"),
        ("assistant", "a castle in fog"),
    )


def test_rename_delete_and_unreadable_files(tmp_path):
    store = ConversationStore(tmp_path)
    conv = _conversation()
    store.save(conv)
    assert store.rename(conv.id, "  Foggy castles ").title == "Foggy castles"
    assert store.load(conv.id).title == "Foggy castles"
    (tmp_path / "broken.json").write_text("{not json")
    assert [c.id for c in store.list()] == [conv.id]
    assert store.delete(conv.id)
    assert not store.delete(conv.id)
    with pytest.raises(UserError, match="no longer exists"):
        store.load(conv.id)
    with pytest.raises(UserError):
        store.load("../etc/passwd")


def test_saves_are_atomic(tmp_path, monkeypatch):
    store = ConversationStore(tmp_path)
    conv = _conversation()
    store.save(conv)
    before = (tmp_path / f"{conv.id}.json").read_text()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    conv.messages.append(Message("user", "lost"))
    with pytest.raises(OSError):
        store.save(conv)
    assert (tmp_path / f"{conv.id}.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [f"{conv.id}.json"]


def test_markdown_export(tmp_path):
    store = ConversationStore(tmp_path)
    conv = _conversation()
    store.save(conv)
    out = store.export_markdown(conv.id, tmp_path / "out" / "castle.md")
    text = out.read_text()
    assert text.startswith("# Castle prompts\n")
    assert "## System\n\nYou write image prompts." in text
    assert "## You\n\na castle\n" in text
    assert "## Assistant\n\na castle on a hill, golden hour\n\n*41.5 tokens/s, first token 20 ms*" in text
    assert "> Dropped the 2 oldest" in text
    assert "stopped*" in text
    assert text == to_markdown(conv)


def test_presets(tmp_path):
    presets = PresetStore(tmp_path / "presets.json")
    assert presets.names()[:3] == ["Precise", "Balanced", "Creative"]
    assert presets.get("Precise").method == "greedy"
    mine = Decoding(method="beam", num_beams=3, stop=("\n",), max_new_tokens=77)
    presets.save("Beams", mine)
    assert PresetStore(tmp_path / "presets.json").get("Beams") == mine
    data = json.loads((tmp_path / "presets.json").read_text())
    assert data["presets"]["Beams"]["num_beams"] == 3
    with pytest.raises(UserError, match="built-in"):
        presets.save("Balanced", mine)
    assert presets.delete("Beams") and "Beams" not in presets.names()
    assert presets.all().keys() >= BUILTIN_PRESETS.keys()
