"""Settings: outputs folder, extra model folders, device, low-VRAM switches."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.settings import Settings, default_outputs_dir

DEVICES = [
    ("Automatic (CUDA, then Apple MPS, then CPU)", "auto"),
    ("CUDA GPU", "cuda"),
    ("Apple MPS", "mps"),
    ("CPU", "cpu"),
]


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self.settings = settings
        self.needs_restart = False

        # ---- outputs -----------------------------------------------------------
        self.outputs_edit = QLineEdit(settings.outputs_dir)
        self.outputs_edit.setPlaceholderText(str(default_outputs_dir()))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_outputs)
        outputs_row = QHBoxLayout()
        outputs_row.addWidget(self.outputs_edit, 1)
        outputs_row.addWidget(browse)

        # ---- models --------------------------------------------------------------
        self.folders = QListWidget()
        self.folders.addItems(settings.model_folders)
        self.folders.setMaximumHeight(110)
        add_folder = QPushButton("Add folder…")
        add_folder.clicked.connect(self._add_folder)
        remove_folder = QPushButton("Remove")
        remove_folder.clicked.connect(self._remove_folder)
        folder_buttons = QVBoxLayout()
        folder_buttons.addWidget(add_folder)
        folder_buttons.addWidget(remove_folder)
        folder_buttons.addStretch(1)
        folders_row = QHBoxLayout()
        folders_row.addWidget(self.folders, 1)
        folders_row.addLayout(folder_buttons)
        self.scan_hf = QCheckBox("List models in the local Hugging Face cache (never downloads)")
        self.scan_hf.setChecked(settings.scan_hf_cache)

        # ---- device and memory -----------------------------------------------------
        self.device_box = QComboBox()
        for label, value in DEVICES:
            self.device_box.addItem(label, value)
        index = self.device_box.findData(settings.device)
        self.device_box.setCurrentIndex(max(0, index))
        self.half = QCheckBox("Half precision (fp16) on the GPU")
        self.half.setChecked(settings.half_precision)
        self.slicing = QCheckBox("Attention slicing (less memory, a little slower)")
        self.slicing.setChecked(settings.attention_slicing)
        self.tiling = QCheckBox("VAE tiling (decode large images in tiles)")
        self.tiling.setChecked(settings.vae_tiling)
        self.offload = QCheckBox("Model CPU offload (keep only the active part on the GPU)")
        self.offload.setChecked(settings.cpu_offload)
        self.pickle = QCheckBox("Allow pickle checkpoints (.ckpt/.pt/.bin): only for files you trust")
        self.pickle.setChecked(settings.allow_pickle_checkpoints)

        general = QGroupBox("Outputs and models")
        form = QFormLayout(general)
        form.addRow("Outputs folder", outputs_row)
        form.addRow("Extra model folders", folders_row)
        form.addRow("", self.scan_hf)
        memory = QGroupBox("Device and memory")
        memory_form = QFormLayout(memory)
        memory_form.addRow("Device", self.device_box)
        for box in (self.half, self.slicing, self.tiling, self.offload, self.pickle):
            memory_form.addRow("", box)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(general)
        layout.addWidget(memory)
        layout.addWidget(buttons)

    def _browse_outputs(self) -> None:
        start = self.outputs_edit.text() or str(default_outputs_dir())
        folder = QFileDialog.getExistingDirectory(self, "Outputs folder", start)
        if folder:
            self.outputs_edit.setText(folder)

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder and not self.folders.findItems(folder, Qt.MatchFlag.MatchExactly):
            self.folders.addItem(folder)

    def _remove_folder(self) -> None:
        for item in self.folders.selectedItems():
            self.folders.takeItem(self.folders.row(item))

    def apply(self) -> None:
        """Write the dialog's values into the settings object."""
        s = self.settings
        device = str(self.device_box.currentData())
        self.needs_restart = device != s.device or self.half.isChecked() != s.half_precision
        s.outputs_dir = self.outputs_edit.text().strip()
        s.model_folders = [self.folders.item(i).text() for i in range(self.folders.count())]
        s.scan_hf_cache = self.scan_hf.isChecked()
        s.device = device
        s.half_precision = self.half.isChecked()
        s.attention_slicing = self.slicing.isChecked()
        s.vae_tiling = self.tiling.isChecked()
        s.cpu_offload = self.offload.isChecked()
        s.allow_pickle_checkpoints = self.pickle.isChecked()
