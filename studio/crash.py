"""Crash logs and start-up checks: no failure of the app is ever silent.

`install()` replaces `sys.excepthook` and `threading.excepthook`: an uncaught
exception is written to a log file under the user log directory, printed on
stderr with the log's path, and, when a Qt application is running with a real
screen, shown in a dialog that names the file. `startup_checks()` finds the
problems that would otherwise surface as a crash later (no writable home or
user folders, no models folder) and reports them the same way.

Qt is imported inside functions only, and only when the application already
loaded it, so the CLI and the import of this module stay cheap.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

APP_TITLE = "Latent Studio"
KEEP_LOGS = 20
NO_DIALOGS_ENV = "LATENT_STUDIO_NO_DIALOGS"

_state: dict[str, object] = {}


def log_dir(app_name: str = "latent-studio") -> Path:
    """The user log directory, e.g. ~/.local/state/latent-studio/log on Linux."""
    from platformdirs import user_log_dir

    return Path(user_log_dir(app_name, appauthor=False))


def _version() -> str:
    try:
        from studio import __version__

        return __version__
    except Exception:  # noqa: BLE001 - a crash report must not fail on this
        return "unknown"


def _report_text(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    thread_name: str,
) -> str:
    header = [
        f"{APP_TITLE} {_version()} crash report",
        f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"thread: {thread_name}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"frozen: {bool(getattr(sys, 'frozen', False))}",
        f"argv: {sys.argv!r}",
        "",
    ]
    body = "".join(traceback.format_exception(exc_type, exc, tb))
    return "\n".join(header) + body


def _prune(folder: Path, keep: int) -> None:
    logs = sorted(folder.glob("crash-*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-keep] if keep > 0 else logs:
        try:
            old.unlink()
        except OSError:
            pass


def write_crash_log(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    *,
    app_name: str = "latent-studio",
    thread_name: str | None = None,
) -> Path | None:
    """Write one crash report and return its path (None if no folder was writable).

    Falls back to the temporary directory when the user log directory cannot
    be created, since an unwritable home is one of the faults being reported.
    """
    text = _report_text(exc_type, exc, tb, thread_name or threading.current_thread().name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (log_dir(app_name), Path(tempfile.gettempdir()) / app_name):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{stamp}-{os.getpid()}-{threading.get_ident() % 100000}.log"
            tmp = path.with_suffix(".log.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            _prune(folder, KEEP_LOGS)
            return path
        except OSError:
            continue
    return None


# --- dialogs ---------------------------------------------------------------


def dialogs_possible() -> bool:
    """True when a QApplication runs on a screen someone can look at."""
    if os.environ.get(NO_DIALOGS_ENV):
        return False
    if "PySide6.QtWidgets" not in sys.modules:
        return False
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None or not isinstance(app, QApplication):
        return False
    return app.platformName() not in {"offscreen", "minimal"}


def _exec_dialog(box: object) -> None:
    box.exec()  # type: ignore[attr-defined]


def show_message(title: str, text: str, *, detail: str = "", critical: bool = True) -> bool:
    """Show a modal message box on the GUI thread; False when none can be shown.

    Must be called on the GUI thread; use `_notifier()` from other threads.
    """
    if not dialogs_possible():
        return False
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox()
    box.setIcon(QMessageBox.Icon.Critical if critical else QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(text)
    if detail:
        box.setDetailedText(detail)
    # The log path must be copyable into a bug report, and paths read best unwrapped.
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setStyleSheet("QLabel#qt_msgbox_label { min-width: 36em; }")
    _exec_dialog(box)
    return True


def _notifier() -> object | None:
    """A QObject on the GUI thread that shows crash dialogs for other threads."""
    if "PySide6.QtWidgets" not in sys.modules:
        return None
    existing = _state.get("notifier")
    if existing is not None:
        return existing
    from PySide6.QtCore import QObject, Signal, Slot
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return None

    class CrashNotifier(QObject):
        crashed = Signal(str, str, str)

        @Slot(str, str, str)
        def show(self, title: str, text: str, detail: str) -> None:
            show_message(title, text, detail=detail)

    notifier = CrashNotifier()
    if notifier.thread() is not app.thread():
        notifier.moveToThread(app.thread())
    # Queued: the slot runs on the GUI thread whichever thread emits.
    from PySide6.QtCore import Qt

    notifier.crashed.connect(notifier.show, Qt.ConnectionType.QueuedConnection)
    _state["notifier"] = notifier
    return notifier


def _crash_message(log: Path | None) -> str:
    where = f"A crash log was written to:\n{log}" if log else "No crash log could be written."
    return (
        f"{APP_TITLE} ran into an unexpected error.\n\n{where}\n\n"
        "Please attach this file when you report the problem."
    )


def _on_gui_thread() -> bool:
    if "PySide6.QtCore" not in sys.modules:
        return threading.current_thread() is threading.main_thread()
    from PySide6.QtCore import QCoreApplication, QThread

    app = QCoreApplication.instance()
    return app is None or QThread.currentThread() is app.thread()


def _report(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    thread_name: str,
) -> Path | None:
    app_name = str(_state.get("app_name", "latent-studio"))
    try:
        log = write_crash_log(exc_type, exc, tb, app_name=app_name, thread_name=thread_name)
    except Exception:  # noqa: BLE001 - the report itself must never raise
        log = None
    # A windowed Windows build has no stderr at all (sys.stderr is None).
    if sys.stderr is not None:
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
    print(
        f"{APP_TITLE}: crash log written to {log}" if log else f"{APP_TITLE}: no crash log written",
        file=sys.stderr,
        flush=True,
    )
    detail = "".join(traceback.format_exception_only(exc_type, exc)).strip()
    try:
        if _on_gui_thread():
            show_message(APP_TITLE, _crash_message(log), detail=detail)
        elif dialogs_possible_from_thread():
            notifier = _notifier()
            if notifier is not None:
                notifier.crashed.emit(APP_TITLE, _crash_message(log), detail)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a broken dialog must not hide the log path
        pass
    return log


def dialogs_possible_from_thread() -> bool:
    # Reads only the environment and the loaded modules: safe off the GUI thread.
    return not os.environ.get(NO_DIALOGS_ENV) and "PySide6.QtWidgets" in sys.modules


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    _report(exc_type, exc, tb, threading.current_thread().name)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "unknown thread"
    _report(args.exc_type, args.exc_value, args.exc_traceback, name)


def install(app_name: str = "latent-studio") -> Path:
    """Route uncaught exceptions (any thread) to a crash log and dialog.

    Returns the log directory. Safe to call more than once. When a
    QApplication exists already, the dialog helper for other threads is
    created now, on the GUI thread.
    """
    if "previous" not in _state:
        _state["previous"] = (sys.excepthook, threading.excepthook)
    _state["app_name"] = app_name
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    if "PySide6.QtWidgets" in sys.modules and _on_gui_thread():
        _notifier()
    return log_dir(app_name)


def uninstall() -> None:
    """Put back the hooks that were there before `install()`."""
    previous = _state.pop("previous", None)
    if previous is not None:
        sys.excepthook, threading.excepthook = previous  # type: ignore[misc]
    _state.pop("notifier", None)


# --- start-up checks ---------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    message: str
    fatal: bool


def _writable(folder: Path) -> str | None:
    """None if files can be created in `folder` (made if missing), else the reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def check_environment(app_name: str = "latent-studio", models: Path | None = None) -> list[Problem]:
    """What stops the studio from working here, without touching Qt."""
    import platformdirs

    problems: list[Problem] = []
    home = os.environ.get("HOME") or os.environ.get("USERPROFILE") or "(not set)"
    folders = {
        "settings": platformdirs.user_config_dir(app_name, appauthor=False),
        "data": platformdirs.user_data_dir(app_name, appauthor=False),
        "cache": platformdirs.user_cache_dir(app_name, appauthor=False),
        "log": platformdirs.user_log_dir(app_name, appauthor=False),
    }
    unwritable = []
    for label, folder in folders.items():
        reason = _writable(Path(folder))
        if reason:
            unwritable.append((label, folder, reason))
    if unwritable:
        labels = [label for label, _, _ in unwritable]
        names = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
        lines = "\n".join(f"  {folder} ({reason})" for _, folder, reason in unwritable)
        plural = "folder" if len(labels) == 1 else "folders"
        problems.append(
            Problem(
                f"Cannot write to the {names} {plural}:\n{lines}\n"
                f"{APP_TITLE} keeps its settings, gallery and logs in your home folder "
                f"(HOME={home}); make sure it exists and is writable.",
                fatal=True,
            )
        )
    if models is None:
        from studio.paths import models_dir

        models = models_dir()
    if not models.is_dir():
        problems.append(
            Problem(
                f"The models folder {models} is missing, so the bundled models cannot be "
                f"loaded. Reinstall {APP_TITLE}, or set LATENT_STUDIO_MODELS to a folder "
                "of models.",
                fatal=False,
            )
        )
    elif not any(p.is_dir() for p in models.iterdir()):
        problems.append(
            Problem(
                f"The models folder {models} holds no models. Reinstall {APP_TITLE}, or set "
                "LATENT_STUDIO_MODELS to a folder of models.",
                fatal=False,
            )
        )
    return problems


def startup_checks(
    app_name: str = "latent-studio",
    *,
    models: Path | None = None,
    interactive: bool = True,
) -> bool:
    """Report start-up problems on stderr and, if `interactive`, in a dialog.

    Returns False when a problem is fatal and the app should exit (status 1).
    Call it after the QApplication exists for the dialog to appear; pass
    `interactive=False` for unattended runs such as `--smoke`.
    """
    problems = check_environment(app_name, models)
    if not problems:
        return True
    fatal = any(p.fatal for p in problems)
    for problem in problems:
        kind = "error" if problem.fatal else "warning"
        print(f"{app_name}: {kind}: {problem.message}", file=sys.stderr, flush=True)
    if interactive:
        text = "\n\n".join(p.message for p in problems)
        heading = f"{APP_TITLE} cannot start." if fatal else f"{APP_TITLE} started with a problem."
        try:
            show_message(APP_TITLE, f"{heading}\n\n{text}", critical=fatal)
        except Exception:  # noqa: BLE001 - stderr already has the message
            pass
    return not fatal
