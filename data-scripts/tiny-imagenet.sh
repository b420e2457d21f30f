#!/usr/bin/env bash
# Download tiny-ImageNet (tiny-imagenet-200.zip, official archive) into the data root and verify its MD5.
#
# Usage: data-scripts/tiny-imagenet.sh [DATA_ROOT]
#   DATA_ROOT defaults to $SPATIAL_REASONING_DATA, else ./data; the result is DATA_ROOT/tiny-imagenet-200/.
# Environment:
#   TINY_IMAGENET_BASE_URL          base URL of the archive (default http://cs231n.stanford.edu)
#   SPATIAL_REASONING_MIRROR  base URL for every dataset (TINY_IMAGENET_BASE_URL wins over it)
#   TINY_IMAGENET_MD5               expected MD5 (default 90528d7ca1a48142e341f4ef8d21d0de, the published value)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
fetch_dataset "tiny-imagenet" "tiny-imagenet-200.zip" "${TINY_IMAGENET_MD5:-90528d7ca1a48142e341f4ef8d21d0de}" "tiny-imagenet-200" \
    "${TINY_IMAGENET_BASE_URL:-${SPATIAL_REASONING_MIRROR:-http://cs231n.stanford.edu}}" "${1:-}"
