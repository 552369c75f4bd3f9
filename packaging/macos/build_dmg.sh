#!/usr/bin/env bash
# Build "Latent Studio.app" and a drag-to-Applications DMG on macOS.
#
#   bash packaging/macos/build_dmg.sh
#
# Needs macOS 12+, Xcode command line tools, and the project installed in a
# Python 3.11+ environment: pip install -e ".[package]". torch on macOS uses the
# Metal (MPS) device; no CUDA build exists there.
# Output: dist/Latent Studio.app and dist/latent-studio-<version>.dmg
#
# Signing and notarisation (needed for other Macs to open it without a
# warning) take a Developer ID; set CODESIGN_IDENTITY to sign, and
# NOTARY_PROFILE (a `xcrun notarytool store-credentials` profile) to notarise.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=$(python -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
APP="dist/Latent Studio.app"
DMG="dist/latent-studio-${VERSION}.dmg"

# The .icns is rendered from assets/latent-studio.svg with the other icons.
python packaging/render_icons.py
# The spec makes the .app with BUNDLE() when it runs on macOS.
python packaging/build.py --no-deb

if [[ -n "${CODESIGN_IDENTITY:-}" ]]; then
    codesign --deep --force --options runtime --timestamp \
        --sign "$CODESIGN_IDENTITY" "$APP"
fi

rm -f "$DMG"
if command -v create-dmg >/dev/null 2>&1; then
    # brew install create-dmg: a window with the app and an Applications link.
    create-dmg --volname "Latent Studio" --volicon assets/latent-studio.icns \
        --window-size 540 360 --icon-size 128 \
        --icon "Latent Studio.app" 140 170 --app-drop-link 400 170 \
        "$DMG" "$APP"
else
    STAGE=$(mktemp -d)
    cp -R "$APP" "$STAGE/"
    ln -s /Applications "$STAGE/Applications"
    hdiutil create -volname "Latent Studio" -srcfolder "$STAGE" -ov -format UDZO "$DMG"
    rm -rf "$STAGE"
fi

if [[ -n "${CODESIGN_IDENTITY:-}" && -n "${NOTARY_PROFILE:-}" ]]; then
    codesign --force --sign "$CODESIGN_IDENTITY" "$DMG"
    xcrun notarytool submit "$DMG" --keychain-profile "$NOTARY_PROFILE" --wait
    xcrun stapler staple "$DMG"
fi
echo "$DMG"
