#!/usr/bin/env bash
# Tests of the wsu browser client (wsu/js/wsu.js) in headless Chromium: first its session features
# (hello, resume, recovery, presence) against a fake server written in Node with `ws`
# (tests/browser/resume.test.mjs, no cargo build needed); then against a real wsu server
# (tests/src/bin/browser_server.rs), driven by playwright-core (tests/browser/test.mjs), and with
# recovery on, through a TCP proxy in Node that cuts the link (tests/browser/recovery.test.mjs); then the
# example chat app's page against its server (tests/browser/chat.test.mjs), and on two nodes of
# a cluster through a child redis-server and nats-server (tests/browser/cluster.test.mjs).
#
# Needs node + npm and Chromium at /usr/bin/chromium (Debian's `chromium` package; Playwright's
# own browser downloads are never used). In CI (CI set to anything but "" / "0" / "false"; .ci/run
# sets CI=true) it installs Chromium with apt-get when missing, always runs `npm ci`, and FAILS on
# any error, a missing node/npm included. Locally, when node/npm is missing, or Chromium is
# missing and cannot be installed (apt-get, as root), or `npm ci` fails, it prints a "SKIPPED: ..."
# banner and exits 0 (.ci/lib.sh).
# Takes about 10 s once the server binary is built.
set -euo pipefail
cd "$(dirname "$0")"
here="$(pwd)"
root="$(cd ../.. && pwd)"
source "$root/.ci/lib.sh"

chromium="${CHROMIUM:-/usr/bin/chromium}"

skip() {
  wsu_skip_or_fail "browser tests" "$1" "${2:-}"
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  skip "node or npm not found" "install Node.js 20+ with npm"
fi

install_chromium() {
  echo "== installing chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
}

if [ ! -x "$chromium" ]; then
  how="apt-get update && apt-get install -y chromium (as root), or CHROMIUM=/path/to/chromium"
  if [ -z "${CHROMIUM:-}" ] && command -v apt-get >/dev/null 2>&1 &&
    { wsu_in_ci || [ "$(id -u)" = 0 ]; }; then
    install_chromium || skip "$chromium not found and apt-get could not install chromium" "$how"
    [ -x "$chromium" ] || skip "apt-get installed chromium but $chromium is still missing" "$how"
  else
    skip "$chromium not found" "$how"
  fi
fi

echo "== chromium: $("$chromium" --version 2>/dev/null || echo unknown)"
echo "== node: $(node --version)"

if wsu_in_ci || [ ! -d node_modules/playwright-core ]; then
  echo "== npm ci"
  # No browser download: playwright-core ships none, and the variable makes sure of it.
  if ! PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error; then
    skip "npm ci failed (tests/browser/package-lock.json)" "needs access to the npm registry"
  fi
fi

echo "== node --test resume.test.mjs (hello, resume, recovery, presence; against a fake server in Node)"
CHROMIUM="$chromium" timeout 120 node --test --test-reporter=spec resume.test.mjs

echo "== cargo build -p wsu-tests --bin browser_server, -p chat --bin chat"
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
# Each binary is copied right after its build: a target directory shared with other checkouts
# (CARGO_TARGET_DIR) may get another build of it while the tests run.
bin_dir="$(mktemp -d "${TMPDIR:-/tmp}/wsu-browser-bin.XXXXXX")"
trap 'rm -rf "$bin_dir"' EXIT
(cd "$root" && cargo build -q -p wsu-tests --bin browser_server)
cp "$target_dir/debug/browser_server" "$bin_dir/"
(cd "$root" && cargo build -q -p chat --bin chat)
cp "$target_dir/debug/chat" "$bin_dir/"

echo "== node --test test.mjs"
rm -rf "$here/out"
WSU_BROWSER_SERVER="$bin_dir/browser_server" CHROMIUM="$chromium" \
  timeout 180 node --test --test-reporter=spec test.mjs
echo "== node --test recovery.test.mjs (resume against the real server, through a cutting proxy)"
WSU_BROWSER_SERVER="$bin_dir/browser_server" CHROMIUM="$chromium" \
  timeout 180 node --test --test-reporter=spec recovery.test.mjs
echo "== node --test chat.test.mjs (the example chat app)"
WSU_CHAT_SERVER="$bin_dir/chat" CHROMIUM="$chromium" \
  timeout 180 node --test --test-reporter=spec chat.test.mjs
echo "== node --test cluster.test.mjs (the chat app on two nodes: Redis, then NATS)"
# Starts its own redis-server / nats-server children; a missing one FAILS in CI, else is SKIPPED.
WSU_CHAT_SERVER="$bin_dir/chat" CHROMIUM="$chromium" \
  timeout 300 node --test --test-reporter=spec cluster.test.mjs
echo "== browser tests passed (screenshots in tests/browser/out/)"
