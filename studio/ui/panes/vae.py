from studio.ui.panes.placeholder import NotBuiltPane


class VaePane(NotBuiltPane):
    feature = "The VAE pane (latent interpolation)"
