import asyncio
import json
import shutil

import pytest
import qasync
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QPlainTextEdit

from studio.core.conversations import ConversationStore
from studio.core.endpoints import load_api_key
from studio.core.jobs import Decoding
from studio.ui.panes.prompt import ENDPOINT, PromptPane, format_stop, parse_stop
from studio.ui.widgets.enhance import EnhanceButton, clean_suggestion
from tests.core.sse_server import WORDS, ChatServer
from tests.core.tiny_llm import build_tiny_lm

GREEDY = Decoding(method="greedy", max_new_tokens=24)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny-llama", "llama", chat_template=True, context=256)


@pytest.fixture
def pane(qtbot, bridge, settings, tiny_lm):
    pane = PromptPane(bridge, settings)
    qtbot.addWidget(pane)
    with qtbot.waitSignal(pane.modelsLoaded, timeout=30000):
        pass
    pane.select_model(str(tiny_lm))
    pane.set_decoding(GREEDY)
    yield pane
    pane.shutdown()


def _send(qtbot, pane, text, timeout=30000):
    with qtbot.waitSignal(pane.replyFinished, timeout=timeout) as blocker:
        assert pane.send(text)
    return blocker.args[0]


def test_tokens_stream_in_and_the_exchange_is_saved(qtbot, pane, bridge):
    tokens = []
    bridge.token.connect(lambda jid, text: tokens.append(text))
    result = _send(qtbot, pane, "a red circle")
    assert result.new_tokens > 0 and len(tokens) > 1
    assert "".join(tokens) == result.text
    reply = pane.chat.views[-1]
    assert reply.text() == result.text
    assert "tok/s" in reply.figures.text() and "first token" in reply.figures.text()
    pane.wait_for_saves()
    saved = ConversationStore().list()
    assert len(saved) == 1 and saved[0].title == "a red circle"
    assert [m.role for m in saved[0].messages] == ["user", "assistant"]
    assert saved[0].messages[1].meta["tokens_per_s"] > 0
    assert not pane.busy and pane.send_button.isEnabled()


def test_stop_keeps_the_partial_reply_and_the_next_message_works(qtbot, pane, bridge):
    pane.set_decoding(Decoding(method="greedy", max_new_tokens=200))
    seen = []

    def on_token(jid, text):
        seen.append(text)
        if len(seen) == 2:
            pane.stop()

    bridge.token.connect(on_token)
    result = _send(qtbot, pane, "a red circle")
    bridge.token.disconnect(on_token)
    assert result.stopped and result.new_tokens < 200
    assert pane.chat.views[-1].text() == result.text
    assert "stopped" in pane.chat.views[-1].figures.text()
    assert pane.conversation.messages[-1].meta["stopped"] is True
    # The thread is free again: the next message is answered in full.
    pane.set_decoding(GREEDY)
    again = _send(qtbot, pane, "and a blue square")
    assert not again.stopped
    assert [m.role for m in pane.conversation.messages] == ["user", "assistant", "user", "assistant"]


def test_conversations_reopen_rename_export_delete(qtbot, pane, bridge, settings, tmp_path):
    first = _send(qtbot, pane, "castle on a hill")
    conversation_id = pane.conversation.id
    pane.wait_for_saves()

    later = PromptPane(bridge, settings)
    qtbot.addWidget(later)
    assert later.conversation_list.count() == 1
    later.open_conversation(conversation_id)
    assert [v.text() for v in later.chat.views] == ["castle on a hill", first.text]
    assert later.conversation_list.currentItem().data(Qt.ItemDataRole.UserRole) == conversation_id
    later.rename_conversation(conversation_id, "Castles")
    assert later.conversation_list.item(0).text().startswith("Castles")
    out = later.store.export_markdown(conversation_id, tmp_path / "castles.md")
    assert out.read_text().startswith("# Castles")
    later.delete_conversation(conversation_id)
    assert later.conversation_list.count() == 0 and later.conversation is None
    assert later.chat.views == []


def test_send_to_image_pane(qtbot, pane):
    result = _send(qtbot, pane, "a lighthouse")
    with qtbot.waitSignal(pane.sendPrompt, timeout=2000) as blocker:
        pane.chat.views[-1].send_button.click()
    assert blocker.args == [result.text.strip()]
    with qtbot.waitSignal(pane.sendPrompt, timeout=2000) as blocker:
        pane.chat.views[0].send_button.click()
    assert blocker.args == ["a lighthouse"]


def test_a_broken_model_fails_clearly_and_the_conversation_is_kept(qtbot, pane, tiny_lm, tmp_path):
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_lm, broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    _send(qtbot, pane, "first message")
    pane.select_model(str(broken))
    with qtbot.waitSignal(pane.replyFailed, timeout=30000) as blocker:
        pane.send("second message")
    assert "no tokenizer" in blocker.args[0]
    assert pane.error_label.isVisibleTo(pane) and "no tokenizer" in pane.error_label.text()
    assert [m.content for m in pane.conversation.messages if m.role == "user"] == ["first message", "second message"]
    assert [v.message.role for v in pane.chat.views] == ["user", "assistant", "user"]
    pane.select_model(str(tiny_lm))
    result = _send(qtbot, pane, "third message")
    assert result.new_tokens > 0 and not pane.error_label.isVisibleTo(pane)


def test_presets_and_stop_strings(pane):
    pane.preset_box.setCurrentIndex(pane.preset_box.findData("Precise"))
    assert pane.decoding().method == "greedy"
    pane.preset_box.setCurrentIndex(pane.preset_box.findData("Creative"))
    assert pane.decoding().temperature == pytest.approx(1.1)
    pane.top_k.setValue(7)
    assert pane.preset_box.currentData() == ""  # edited: now a custom setting
    assert parse_stop(r"\n, ###, a\,b") == ("\n", "###", "a,b")
    assert parse_stop(format_stop(("\n", "a,b"))) == ("\n", "a,b")


_LOOPS: list = []


@pytest.fixture
def run_until():
    """The app's qasync loop, for the endpoint path; returns `run(condition)`.

    Like the app's, the loop lives as long as the process. qasync leaves a Qt timer
    behind for every cancelled callback (httpx's timeouts); a loop collected while
    one is pending (by a garbage collection on another thread) leaves Qt a
    dangling timer that crashes a later test.
    """
    if not _LOOPS:
        _LOOPS.append(qasync.QEventLoop(QApplication.instance(), already_running=False))
    loop = _LOOPS[0]
    asyncio.set_event_loop(loop)

    def run(until, timeout=10.0):
        async def wait():
            end = loop.time() + timeout
            while not until() and loop.time() < end:
                await asyncio.sleep(0.01)

        loop.run_until_complete(wait())

    yield run
    asyncio.set_event_loop(None)


def test_endpoint_streams_on_the_qasync_loop(qtbot, pane, run_until, settings):
    with ChatServer(api_key="") as server:
        pane.select_model(ENDPOINT)
        assert pane.endpoint_group.isVisibleTo(pane)
        pane.url_edit.setText(server.base_url)
        pane.endpoint_model_edit.setEditText("ok")
        # The key goes to its own file (mode 600), never into the settings.
        pane.key_edit.setText("sk-test")
        pane.key_edit.editingFinished.emit()
        assert load_api_key(server.base_url) == "sk-test"
        pane.store_settings(settings)
        assert "sk-test" not in json.dumps(settings.to_dict())
        pane.key_edit.setText("")
        pane.key_edit.editingFinished.emit()
        assert load_api_key(server.base_url) == ""
        results, errors = [], []
        pane.replyFinished.connect(results.append)
        pane.replyFailed.connect(errors.append)
        assert pane.send("a castle")
        run_until(lambda: results or errors)
        assert not errors and results[0].text == "".join(WORDS)
        assert pane.chat.views[-1].text() == "".join(WORDS)

        # Stop mid-stream keeps the words so far.
        pane.endpoint_model_edit.setEditText("slow")
        pieces = []

        def on_piece(text):
            pieces.append(text)
            if len(pieces) == 3:
                pane.stop()

        pane.replyToken.connect(on_piece)
        assert pane.send("a slow castle")
        run_until(lambda: len(results) == 2 or errors)
        pane.replyToken.disconnect(on_piece)
        assert results[1].stopped and results[1].text == "".join(WORDS[:3])
        assert pane.chat.views[-1].text() == "".join(WORDS[:3])

        pane.endpoint_model_edit.setEditText("missing-model")
        assert pane.send("again")
        run_until(lambda: errors)
        assert "Not found (404)" in errors[0] and "missing-model" in pane.error_label.text()
        assert not pane.busy


def test_enhance_offers_a_rewrite_to_accept_or_undo(qtbot, bridge, settings, tiny_lm):
    assert clean_suggestion(' "Prompt: a  castle,\nfog" ') == "a castle, fog"
    settings.llm_enhance_model = str(tiny_lm)
    edit = QPlainTextEdit("a castle")
    qtbot.addWidget(edit)
    button = EnhanceButton(bridge, settings, edit)
    qtbot.addWidget(button)
    with qtbot.waitSignal(button.suggested, timeout=30000) as blocker:
        assert button.enhance()
        assert button.text().startswith("Enhancing")
    suggestion = blocker.args[0]
    assert button._popup is not None and button._popup.edit.toPlainText() == suggestion
    with qtbot.waitSignal(button.enhanced, timeout=2000):
        button._popup.accept_button.click()
    assert edit.toPlainText() == suggestion and button.text() == "Undo enhance"
    with qtbot.waitSignal(button.undone, timeout=2000):
        button.click()
    assert edit.toPlainText() == "a castle" and button.text() == "Enhance"
    # The accepted text was an ordinary edit: the editor's own undo reverts it too.
    button.accept("a castle at dawn")
    edit.undo()
    assert edit.toPlainText() == "a castle"
