#!/usr/bin/env bash
# Checks that vendor/dfdx is the crates.io release of dfdx 0.13.0 plus exactly the patch beside it
# (vendor/dfdx-0.13.0-backport.patch), file by file and byte by byte.
#
#   bash scripts/check-vendor.sh
#
# 1. fetch dfdx-0.13.0.crate from crates.io (or take it from cargo's download cache when it is
#    there), and check its sha256 against the checksum Cargo.lock recorded for the registry crate
#    before the switch to the vendored path (pinned below);
# 2. unpack it into a temporary folder, apply the patch with `git apply`, and
# 3. compare the result with vendor/dfdx: same file list, same bytes (CRLF line endings included).
# Needs curl (or python3), tar, git. Downloads 0.4 MB once. Exit 1 on any difference.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
crate=dfdx-0.13.0.crate
# Cargo.lock's checksum for dfdx 0.13.0 from crates.io (recorded before [patch.crates-io]).
sha=c6dbcb8a7363d8b434ca20bd3808ab9f6ee77e6916ca1d511f8e3c725d0b340e
url="https://static.crates.io/crates/dfdx/$crate"
patch="$repo/vendor/dfdx-0.13.0-backport.patch"
fail() { echo "check-vendor: FAIL: $*" >&2; exit 1; }

# Outside the repository: `git apply` inside a repository would resolve paths from its root.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/sr-check-vendor.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

cached="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate" 2>/dev/null | head -1 || true)"
if [ -n "$cached" ] && echo "$sha  $cached" | sha256sum -c --status; then
  cp "$cached" "$tmp/$crate"
  echo "check-vendor: $crate from cargo's cache ($cached)"
else
  if command -v curl >/dev/null; then
    curl -sSfL --retry 3 -o "$tmp/$crate" "$url" || fail "download of $url"
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "$url" "$tmp/$crate" || fail "download of $url"
  fi
  echo "check-vendor: $crate from $url"
fi
got="$(sha256sum "$tmp/$crate" | cut -d' ' -f1)"
[ "$got" = "$sha" ] || fail "$crate has sha256 $got, Cargo.lock recorded $sha"

mkdir "$tmp/x"
tar xzf "$tmp/$crate" -C "$tmp/x"
(cd "$tmp/x/dfdx-0.13.0" && GIT_CEILING_DIRECTORIES="$tmp" git apply -p1 "$patch") ||
  fail "the patch does not apply to the release"
changed="$(grep -c '^+++ ' "$patch")"
[ "$changed" -eq 4 ] || fail "the patch changes $changed files, expected 4"

# Same files (names) and same bytes.
if ! diff -r "$tmp/x/dfdx-0.13.0" "$repo/vendor/dfdx" >"$tmp/diff.txt"; then
  head -40 "$tmp/diff.txt" >&2
  fail "vendor/dfdx differs from dfdx 0.13.0 + $(basename "$patch")"
fi
n="$(find "$repo/vendor/dfdx" -type f | wc -l)"
echo "check-vendor: OK: vendor/dfdx ($n files) = dfdx 0.13.0 (sha256 $sha) + $(basename "$patch") (4 files)"
