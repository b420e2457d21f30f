#!/usr/bin/env bash
# Download STL-10 (stl10_binary.tar.gz, official archive) into the data root and verify its MD5.
#
# Usage: data-scripts/stl10.sh [DATA_ROOT]
#   DATA_ROOT defaults to $SPATIAL_REASONING_DATA, else ./data; the result is DATA_ROOT/stl10_binary/.
# Environment:
#   STL10_BASE_URL          base URL of the archive (default http://ai.stanford.edu/~acoates/stl10)
#   SPATIAL_REASONING_MIRROR  base URL for every dataset (STL10_BASE_URL wins over it)
#   STL10_MD5               expected MD5 (default 91f7769df0f17e558f3565bffb0c7dfb, the published value)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
fetch_dataset "stl10" "stl10_binary.tar.gz" "${STL10_MD5:-91f7769df0f17e558f3565bffb0c7dfb}" "stl10_binary" \
    "${STL10_BASE_URL:-${SPATIAL_REASONING_MIRROR:-http://ai.stanford.edu/~acoates/stl10}}" "${1:-}"
