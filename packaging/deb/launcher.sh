#!/bin/sh
# Latent Studio: `latent-studio` opens the window, `latent-studio COMMAND ...` runs the CLI.
exec /opt/latent-studio/latent-studio "$@"
