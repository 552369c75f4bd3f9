"""Crash logs and start-up checks: every failure leaves a log and a message."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from studio import crash


@pytest.fixture
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def installed(user_dirs: Path):
    crash.install("latent-studio-test")
    yield user_dirs
    crash.uninstall()


def _raise(message: str) -> None:
    raise RuntimeError(message)


def test_log_dir_is_the_platform_user_log_dir(user_dirs: Path) -> None:
    assert crash.log_dir("latent-studio") == user_dirs / "state" / "latent-studio" / "log"


def test_uncaught_exception_writes_log_and_names_it_on_stderr(installed: Path, capsys) -> None:
    try:
        _raise("main thread exploded")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    logs = list((installed / "state" / "latent-studio-test" / "log").glob("crash-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "main thread exploded" in text
    assert "_raise" in text  # the traceback, not only the message
    assert "thread: MainThread" in text
    err = capsys.readouterr().err
    assert str(logs[0]) in err
    assert "RuntimeError: main thread exploded" in err


def test_exception_in_a_thread_is_logged(installed: Path, capsys) -> None:
    worker = threading.Thread(target=_raise, args=("worker exploded",), name="inference")
    worker.start()
    worker.join()
    logs = list((installed / "state" / "latent-studio-test" / "log").glob("crash-*.log"))
    assert len(logs) == 1
    assert "thread: inference" in logs[0].read_text()
    assert "worker exploded" in logs[0].read_text()
    assert str(logs[0]) in capsys.readouterr().err


def test_keyboard_interrupt_is_not_a_crash(installed: Path, capsys) -> None:
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    assert not (installed / "state" / "latent-studio-test" / "log").exists()


def test_unwritable_log_dir_falls_back_to_temp(
    user_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker / "state"))
    monkeypatch.setattr(crash.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    try:
        _raise("no home")
    except RuntimeError as exc:
        path = crash.write_crash_log(type(exc), exc, exc.__traceback__, app_name="ls-test")
    assert path is not None and path.parent == tmp_path / "tmp" / "ls-test"
    assert "no home" in path.read_text()


def test_old_logs_are_pruned(user_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crash, "KEEP_LOGS", 3)
    folder = crash.log_dir("ls-test")
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"crash-old-{i}.log").write_text("old")
    try:
        _raise("new")
    except RuntimeError as exc:
        crash.write_crash_log(type(exc), exc, exc.__traceback__, app_name="ls-test")
    assert len(list(folder.glob("crash-*.log"))) == 3


def test_uninstall_restores_hooks(user_dirs: Path) -> None:
    before = (sys.excepthook, threading.excepthook)
    crash.install("ls-test")
    assert sys.excepthook is not before[0]
    crash.uninstall()
    assert (sys.excepthook, threading.excepthook) == before


def test_importing_crash_does_not_import_qt() -> None:
    import subprocess

    code = "import sys, studio.crash; print(any(m.startswith('PySide6') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_startup_checks_pass_on_a_good_setup(user_dirs: Path, tmp_path: Path, capsys) -> None:
    models = tmp_path / "models"
    (models / "shapes-diffusion").mkdir(parents=True)
    assert crash.check_environment("ls-test", models) == []
    assert crash.startup_checks("ls-test", models=models, interactive=False) is True
    assert capsys.readouterr().err == ""


def test_unwritable_home_is_fatal_and_explained(
    user_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker / "config"))
    models = tmp_path / "models"
    (models / "m").mkdir(parents=True)
    problems = crash.check_environment("ls-test", models)
    assert [p.fatal for p in problems] == [True]
    assert str(blocker / "config" / "ls-test") in problems[0].message
    assert crash.startup_checks("ls-test", models=models, interactive=False) is False
    err = capsys.readouterr().err
    assert "error: Cannot write to the settings folder:" in err


def test_missing_models_folder_is_a_warning(user_dirs: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "gone"
    assert crash.startup_checks("ls-test", models=missing, interactive=False) is True
    err = capsys.readouterr().err
    assert f"warning: The models folder {missing} is missing" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no models" in crash.check_environment("ls-test", empty)[0].message


def test_missing_models_uses_the_env_override(
    user_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATENT_STUDIO_MODELS", str(tmp_path / "elsewhere"))
    problems = crash.check_environment("ls-test")
    assert any(str(tmp_path / "elsewhere") in p.message for p in problems)


def test_dialog_names_the_log_path(installed: Path, qapp, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(crash, "dialogs_possible", lambda: True)
    monkeypatch.setattr(crash, "_exec_dialog", lambda box: shown.append(box.text()))
    try:
        _raise("dialog please")
    except RuntimeError as exc:
        log = crash._report(type(exc), exc, exc.__traceback__, "MainThread")
    assert log is not None
    assert len(shown) == 1 and str(log) in shown[0]


def test_worker_thread_crash_dialog_appears_on_gui_thread(
    installed: Path, qapp, qtbot, monkeypatch
) -> None:
    crash.install("latent-studio-test")  # now with a QApplication: makes the notifier
    shown: list[tuple[str, bool]] = []
    monkeypatch.setattr(crash, "dialogs_possible", lambda: True)
    monkeypatch.setattr(
        crash,
        "_exec_dialog",
        lambda box: shown.append(
            (box.text(), threading.current_thread() is threading.main_thread())
        ),
    )
    worker = threading.Thread(target=_raise, args=("from worker",), name="inference")
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=2000)
    text, on_main = shown[0]
    assert on_main
    assert "crash log was written to" in text


def test_startup_dialog_lists_problems(user_dirs: Path, tmp_path: Path, qapp, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(crash, "dialogs_possible", lambda: True)
    monkeypatch.setattr(crash, "_exec_dialog", lambda box: shown.append(box.text()))
    crash.startup_checks("ls-test", models=tmp_path / "gone", interactive=True)
    assert len(shown) == 1
    assert "started with a problem" in shown[0] and str(tmp_path / "gone") in shown[0]


def test_offscreen_never_blocks_on_a_dialog(qapp) -> None:
    assert crash.dialogs_possible() is False


def test_all_unwritable_folders_in_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(blocker / var.lower()))
    models = tmp_path / "models"
    (models / "m").mkdir(parents=True)
    (problem,) = crash.check_environment("ls-test", models)
    assert problem.fatal
    assert problem.message.startswith("Cannot write to the settings, data, cache and log folders:")
    assert problem.message.count("Not a directory") == 4


def test_crash_without_stderr_still_logs_and_shows_the_dialog(
    installed: Path, qapp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A windowed Windows build runs with sys.stderr = None."""
    shown: list[str] = []
    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.setattr(crash, "dialogs_possible", lambda: True)
    monkeypatch.setattr(crash, "_exec_dialog", lambda box: shown.append(box.text()))
    try:
        _raise("no console")
    except RuntimeError as exc:
        log = crash._report(type(exc), exc, exc.__traceback__, "MainThread")
    assert log is not None and "no console" in log.read_text()
    assert len(shown) == 1 and str(log) in shown[0]
