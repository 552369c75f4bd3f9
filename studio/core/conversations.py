"""Saved conversations and decoding presets, as JSON files under the user data dir.

One file per conversation, written to a temporary name and moved into place,
so a crash mid-save keeps the previous version. Presets: three built in
(Precise, Balanced, Creative) and the user's own in one JSON file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from studio.core.errors import UserError
from studio.core.jobs import Decoding

SCHEMA_VERSION = 1


def _atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_root() -> Path:
    from studio.core.settings import data_dir

    return data_dir() / "conversations"


# ---- conversations --------------------------------------------------------------


@dataclass
class Message:
    role: str  # "user", "assistant" or "notice" (shown, never sent to the model)
    content: str
    # Figures of a generated reply: tokens_per_s, ttft_s, new_tokens, stopped, seed, model.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversation:
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    title: str = "New conversation"
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    model: str = ""
    system: str = ""
    messages: list[Message] = field(default_factory=list)

    def turns(self) -> tuple[tuple[str, str], ...]:
        """What the model sees: user and assistant messages, notices left out."""
        return tuple(
            (m.role, m.content) for m in self.messages if m.role in ("user", "assistant") and m.content
        )

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        messages = [
            Message(str(m.get("role", "user")), str(m.get("content", "")), dict(m.get("meta") or {}))
            for m in data.get("messages", [])
            if isinstance(m, dict)
        ]
        return cls(
            id=str(data["id"]),
            title=str(data.get("title", "Conversation")),
            created=float(data.get("created", 0.0)),
            updated=float(data.get("updated", 0.0)),
            model=str(data.get("model", "")),
            system=str(data.get("system", "")),
            messages=messages,
        )


def title_from(text: str, limit: int = 48) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class ConversationStore:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def _path(self, conversation_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", conversation_id):
            raise UserError(f"Not a conversation id: {conversation_id!r}")
        return self.root / f"{conversation_id}.json"

    def save(self, conversation: Conversation, touch: bool = True) -> None:
        if touch:
            conversation.updated = time.time()
        _atomic_write(self._path(conversation.id), json.dumps(conversation.to_dict(), indent=1, ensure_ascii=False))

    def load(self, conversation_id: str) -> Conversation:
        path = self._path(conversation_id)
        try:
            return Conversation.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise UserError("That conversation no longer exists.") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"The conversation file {path} cannot be read ({exc}).") from exc

    def list(self) -> list[Conversation]:
        """All conversations, most recently updated first; unreadable files are skipped."""
        found = []
        if not self.root.is_dir():
            return found
        for path in self.root.glob("*.json"):
            try:
                found.append(Conversation.from_dict(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda c: c.updated, reverse=True)

    def rename(self, conversation_id: str, title: str) -> Conversation:
        conversation = self.load(conversation_id)
        conversation.title = title.strip() or conversation.title
        self.save(conversation, touch=False)
        return conversation

    def delete(self, conversation_id: str) -> bool:
        try:
            self._path(conversation_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def export_markdown(self, conversation_id: str, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        _atomic_write(target, to_markdown(self.load(conversation_id)))
        return target


def to_markdown(conversation: Conversation) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conversation.created))
    lines = [f"# {conversation.title}", "", f"*{when}*" + (f" · model: `{conversation.model}`" if conversation.model else ""), ""]
    if conversation.system.strip():
        lines += ["## System", "", conversation.system.strip(), ""]
    names = {"user": "You", "assistant": "Assistant", "notice": "Notice"}
    for message in conversation.messages:
        name = names.get(message.role, message.role.title())
        if message.role == "notice":
            lines += [f"> {message.content}", ""]
            continue
        lines += [f"## {name}", "", message.content, ""]
        meta = message.meta
        if message.role == "assistant" and meta.get("tokens_per_s"):
            figures = f"{meta['tokens_per_s']:.1f} tokens/s, first token {meta.get('ttft_s', 0) * 1000:.0f} ms"
            if meta.get("stopped"):
                figures += ", stopped"
            lines += [f"*{figures}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- presets ------------------------------------------------------------------------


BUILTIN_PRESETS: dict[str, Decoding] = {
    "Precise": Decoding(method="greedy", repetition_penalty=1.1, max_new_tokens=256),
    "Balanced": Decoding(method="sample", temperature=0.7, top_k=40, top_p=0.95, repetition_penalty=1.1),
    "Creative": Decoding(method="sample", temperature=1.1, top_k=100, top_p=0.98, repetition_penalty=1.05),
}


def decoding_from_dict(data: dict[str, Any]) -> Decoding:
    known = {f.name for f in fields(Decoding)}
    values = {k: v for k, v in data.items() if k in known}
    if "stop" in values:
        values["stop"] = tuple(str(s) for s in values["stop"])
    try:
        return replace(Decoding(), **values)
    except TypeError as exc:
        raise UserError(f"Not a decoding preset: {exc}") from exc


class PresetStore:
    """Built-in presets plus the user's, saved in one JSON file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_root().parent / "presets.json"

    def _user(self) -> dict[str, Decoding]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        presets = data.get("presets", {}) if isinstance(data, dict) else {}
        loaded = {}
        for name, values in presets.items():
            if isinstance(values, dict):
                try:
                    loaded[str(name)] = decoding_from_dict(values)
                except UserError:
                    continue
        return loaded

    def all(self) -> dict[str, Decoding]:
        return {**BUILTIN_PRESETS, **self._user()}

    def names(self) -> list[str]:
        return list(self.all())

    def get(self, name: str) -> Decoding:
        preset = self.all().get(name)
        if preset is None:
            raise UserError(f"No preset named {name!r}.")
        return preset

    def is_builtin(self, name: str) -> bool:
        return name in BUILTIN_PRESETS

    def save(self, name: str, decoding: Decoding) -> None:
        name = name.strip()
        if not name:
            raise UserError("A preset needs a name.")
        if name in BUILTIN_PRESETS:
            raise UserError(f"{name} is a built-in preset; save yours under another name.")
        user = self._user()
        user[name] = decoding
        self._write(user)

    def delete(self, name: str) -> bool:
        user = self._user()
        if user.pop(name, None) is None:
            return False
        self._write(user)
        return True

    def _write(self, presets: dict[str, Decoding]) -> None:
        data = {"schema_version": SCHEMA_VERSION, "presets": {n: asdict(d) for n, d in presets.items()}}
        _atomic_write(self.path, json.dumps(data, indent=1))
