#!/usr/bin/env bash
# Shows that a change left every output byte the same: builds the draft demo and the tiny-model demo
# with commit REV (in a temporary worktree) and with the working tree, then compares the sha256 of
# every panel PNG, page PNG, PDF and CBZ. Exit 0 and "identical" when they match.
# Usage (from the repository root, after `make setup`): tools/same_output.sh REV
set -euo pipefail
rev=${1:?usage: tools/same_output.sh REV}
root=$(git rev-parse --show-toplevel)
sb=${STORYBOARD:-$root/.venv/bin/storyboard}
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/tree" "$rev"
# The fingerprint script of the working tree drives both builds, so both are measured the same way.
(cd "$work/tree" && PYTHONPATH="$work/tree" STORYBOARD="$sb" bash "$root/tools/output_fingerprint.sh" "$work/before") >"$work/before.sha"
(cd "$root" && PYTHONPATH="$root" STORYBOARD="$sb" bash "$root/tools/output_fingerprint.sh" "$work/after") >"$work/after.sha"
if diff "$work/before.sha" "$work/after.sha"; then
  echo "identical: $(wc -l <"$work/after.sha") files (panels, pages, PDFs, CBZs) byte for byte"
else
  echo "outputs differ from $rev (lines above: < $rev, > working tree)" >&2
  exit 1
fi
