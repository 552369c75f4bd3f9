from studio.ui.panes.placeholder import NotBuiltPane


class GanPane(NotBuiltPane):
    feature = "The GAN pane (sampling and PCA directions)"
