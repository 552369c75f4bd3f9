"""The GUI: QApplication on a qasync loop; the window is shown before torch loads.

Order matters here. The window is built and painted first, from modules that
import neither torch nor diffusers; only then does the engine start its thread,
whose first act (choosing the device) imports torch. So the window appears in
about the time a bare Qt window does, whatever the models weigh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_IMPORTED_AT = time.perf_counter()


def seconds_since_process_start() -> float:
    """Seconds since this process was created (as the OS counts), else since import."""
    try:
        # Linux: the process start in clock ticks since boot, against the uptime
        # (both to 10 ms; psutil's create_time rounds boot time to whole seconds).
        with open("/proc/self/stat", encoding="ascii") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:
        return time.perf_counter() - _IMPORTED_AT


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="latent-studio",
        description="Latent Studio window",
        epilog="Headless commands (generate, models, info, ...): latent-studio-cli --help",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="open the window, wait for the engine and the model list, print timings as JSON, exit",
    )
    parser.add_argument("--smoke-timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    parser.add_argument("--settings", metavar="FILE", help="settings file (default: user config)")
    parser.add_argument("--outputs", metavar="DIR", help="outputs folder (kept in the settings)")
    parser.add_argument(
        "--device", choices=["auto", "cuda", "mps", "cpu"], help="device (kept in the settings)"
    )
    # Qt's own options (-platform, -style, ...) pass through to QApplication.
    return parser.parse_known_args(argv)


def _offline_environment() -> None:
    # Before anything can import transformers or diffusers: never reach the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main(argv: list[str] | None = None) -> int:
    _offline_environment()
    args, qt_args = parse_args(list(sys.argv[1:] if argv is None else argv))

    from studio import crash

    crash.install()

    if args.smoke and not os.environ.get("QT_QPA_PLATFORM") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ) and sys.platform.startswith("linux"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"

    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("Latent Studio")
    app.setOrganizationName("Latent Studio")
    app.setDesktopFileName("latent-studio")
    # Again, now that Qt runs: crashes on other threads can then show their dialog too.
    crash.install()

    from studio.core.settings import load_settings
    from studio.paths import assets_dir
    from studio.ui.theme import apply_theme

    settings = load_settings(args.settings)
    if args.outputs:
        settings.outputs_dir = args.outputs
    if args.device:
        settings.device = args.device
    apply_theme(app, settings.theme)
    if not crash.startup_checks(interactive=not args.smoke):
        return 1
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        path = assets_dir() / f"latent-studio-{size}.png"
        if path.is_file():
            icon.addFile(str(path))
    if not icon.isNull():
        app.setWindowIcon(icon)

    from studio.core.engine import Engine
    from studio.ui.bridge import Bridge
    from studio.ui.main_window import MainWindow, engine_options

    engine = Engine(device=settings.device, options=engine_options(settings))
    bridge = Bridge(engine)
    window = MainWindow(bridge, settings, settings_path=args.settings, persist=not args.smoke)
    window.show()
    app.processEvents()  # paint now, before the engine thread competes for the GIL
    window_shown_s = seconds_since_process_start()
    engine.start()

    import asyncio

    import qasync

    exit_code = 0
    if args.smoke:
        exit_code = _run_smoke(app, window, bridge, window_shown_s, args.smoke_timeout)

    def shut_down() -> None:
        bridge.close()
        engine.stop(timeout=10.0)

    app.aboutToQuit.connect(shut_down)
    _quit_on_interrupt(window)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    with loop:
        loop.run_until_complete(closed.wait())
    return exit_code or getattr(window, "exit_code", 0)


def _quit_on_interrupt(window) -> None:  # noqa: ANN001
    """Ctrl+C in the terminal closes the window (saving its state) instead of a traceback."""
    import signal

    from PySide6.QtCore import QTimer

    signal.signal(signal.SIGINT, lambda *_: window.close())
    # Python runs signal handlers only between bytecodes: wake it now and then.
    timer = QTimer(window)
    timer.setInterval(250)
    timer.timeout.connect(lambda: None)
    timer.start()


def _run_smoke(app, window, bridge, window_shown_s: float, timeout_s: float) -> int:  # noqa: ANN001
    """Arrange for the JSON line and the exit once the engine and the model list are ready."""
    from PySide6.QtCore import QTimer

    state = {"done": False}

    def check() -> None:
        if state["done"] or not bridge.ready or not window.models_loaded():
            return
        state["done"] = True
        line = {
            "window_shown_s": round(window_shown_s, 3),
            "engine_ready_s": round(seconds_since_process_start(), 3),
        }
        print(json.dumps(line), flush=True)
        window.exit_code = 0
        window.close()
        app.quit()

    def give_up() -> None:
        if state["done"]:
            return
        state["done"] = True
        print(
            json.dumps({"error": f"not ready after {timeout_s:.0f} s", "engine_ready": bridge.ready}),
            flush=True,
        )
        window.exit_code = 1
        window.close()
        app.quit()

    bridge.engineReady.connect(lambda *_: check())
    window.modelsLoaded.connect(check)
    QTimer.singleShot(int(timeout_s * 1000), give_up)
    QTimer.singleShot(0, check)
    return 0
