#!/bin/sh
# Regenerate docs/view.png: the page of `arduino view` showing the demo mesh (clock -> iopin ->
# buzzer) with traffic, taken by the same headless Chromium the browser tests use.
# Needs /usr/bin/chromium (apt-get install -y chromium) and node.
set -eu
cd "$(dirname "$0")/.."
(cd tests/browser && npm ci --no-audit --no-fund >/dev/null)
SCREENSHOT="$PWD/docs/view.png" ARDUINO_BROWSER_TESTS=required \
    cargo test --test view screenshot_of_the_demo_mesh -- --ignored --exact --nocapture
echo "wrote docs/view.png ($(wc -c <docs/view.png) bytes)"
