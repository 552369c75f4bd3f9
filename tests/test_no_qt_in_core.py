import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import studio.core, studio.training
names = []
for package in (studio.core, studio.training):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "qasync"))
print(len(names), "modules;", "Qt loaded:", qt)
sys.exit(1 if qt or not names else 0)
"""


def test_core_and_training_never_load_qt():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Qt loaded: []" in proc.stdout
