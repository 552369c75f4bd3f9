"""Latent Studio: local generation studio (LLM, diffusion, VAE, GAN) in one window."""

__version__ = "0.1.0"
