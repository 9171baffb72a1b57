#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard test (tests/dashboard), once:
# as root with apt-get (CI), otherwise it says what to run. Nothing is
# downloaded at test time.
set -euo pipefail
if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "tests/dashboard needs Debian's chromium: sudo apt-get install -y chromium" >&2
exit 1
