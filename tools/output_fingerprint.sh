#!/usr/bin/env bash
# Builds the draft demo and the tiny-model demo with the storyboard found on PYTHONPATH (the `storyboard` command, or $STORYBOARD)
# into OUT_DIR, then prints a sha256 for every panel PNG, page PNG, PDF and CBZ, one per line, so two
# trees' outputs can be compared byte for byte:  tools/same_output.sh REV  does that against a commit.
# Usage: tools/output_fingerprint.sh OUT_DIR   (run from the repository root)
set -euo pipefail
out=$(realpath -m "$1")
sb=${STORYBOARD:-storyboard}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 CI=1
$sb dev tiny-model "$out/tiny-model" >/dev/null
# tiny-demo.yaml names its model folder relative to the story: build a copy that points at OUT_DIR.
sed "s#webui_root: .*#webui_root: $out/tiny-model#" stories/tiny-demo.yaml >"$out/tiny-demo.yaml"
$sb build stories/demo.yaml --draft --out "$out/draft" >/dev/null
$sb build "$out/tiny-demo.yaml" --out "$out/tiny" >/dev/null
cd "$out"
find draft tiny -type f \( -name '*.png' -o -name '*.pdf' -o -name '*.cbz' \) -not -path '*/cache/*' \
  | LC_ALL=C sort | xargs sha256sum
