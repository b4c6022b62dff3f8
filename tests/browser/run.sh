#!/usr/bin/env bash
# Tests of the wsu browser client (wsu/js/wsu.js) in headless Chromium against a real wsu server
# (tests/src/bin/browser_server.rs), driven by playwright-core (tests/browser/test.mjs); then the
# example chat app's page against its server (tests/browser/chat.test.mjs).
#
# Needs node + npm and Chromium at /usr/bin/chromium (Debian's `chromium` package; Playwright's
# own browser downloads are never used). Locally, when node/npm is missing or Chromium is missing
# and cannot be installed (apt-get, as root), or `npm ci` fails, it prints "SKIPPED: ..." and
# exits 0. In CI (CI set to anything but "" / "0" / "false"; .ci/run sets CI=1) it installs
# Chromium with apt-get when missing, always runs `npm ci`, and fails on any error.
# Takes about 10 s once the server binary is built.
set -euo pipefail
cd "$(dirname "$0")"
here="$(pwd)"
root="$(cd ../.. && pwd)"

in_ci=0
case "${CI:-}" in
  "" | 0 | false) ;;
  *) in_ci=1 ;;
esac

chromium="${CHROMIUM:-/usr/bin/chromium}"

skip() {
  echo "SKIPPED: browser tests need node+chromium ($1)"
  exit 0
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$in_ci" = 1 ]; then
    echo "error: browser tests need node and npm" >&2
    exit 1
  fi
  skip "node or npm not found"
fi

install_chromium() {
  echo "== installing chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
}

if [ ! -x "$chromium" ]; then
  if [ "$in_ci" = 1 ]; then
    install_chromium
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
    install_chromium || skip "could not install chromium with apt-get"
  else
    skip "$chromium not found; install it with: apt-get update && apt-get install -y chromium"
  fi
fi

echo "== chromium: $("$chromium" --version 2>/dev/null || echo unknown)"
echo "== node: $(node --version)"

if [ "$in_ci" = 1 ] || [ ! -d node_modules/playwright-core ]; then
  echo "== npm ci"
  # No browser download: playwright-core ships none, and the variable makes sure of it.
  if ! PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error; then
    [ "$in_ci" = 1 ] && exit 1
    skip "npm ci failed"
  fi
fi

echo "== cargo build -p wsu-tests --bin browser_server, -p chat --bin chat"
(cd "$root" && cargo build -q -p wsu-tests --bin browser_server)
(cd "$root" && cargo build -q -p chat --bin chat)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"

echo "== node --test test.mjs"
rm -rf "$here/out"
WSU_BROWSER_SERVER="$target_dir/debug/browser_server" CHROMIUM="$chromium" \
  timeout 180 node --test --test-reporter=spec test.mjs
echo "== node --test chat.test.mjs (the example chat app)"
WSU_CHAT_SERVER="$target_dir/debug/chat" CHROMIUM="$chromium" \
  timeout 180 node --test --test-reporter=spec chat.test.mjs
echo "== browser tests passed (screenshots in tests/browser/out/)"
