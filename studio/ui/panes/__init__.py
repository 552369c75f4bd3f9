"""The window's panes, in tab order: (title, "module:Class").

Each pane is a QWidget constructed as `Pane(bridge, settings, parent=None)`.
"""

PANES: list[tuple[str, str]] = [
    ("Prompt", "studio.ui.panes.prompt:PromptPane"),
    ("Image", "studio.ui.panes.image:ImagePane"),
    ("VAE", "studio.ui.panes.vae:VaePane"),
    ("GAN", "studio.ui.panes.gan:GanPane"),
    ("Travel", "studio.ui.panes.travel:TravelPane"),
    ("Gallery", "studio.ui.panes.gallery:GalleryPane"),
]
