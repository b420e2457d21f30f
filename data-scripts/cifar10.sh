#!/usr/bin/env bash
# Download CIFAR-10 (cifar-10-binary.tar.gz, official archive) into the data root and verify its MD5.
#
# Usage: data-scripts/cifar10.sh [DATA_ROOT]
#   DATA_ROOT defaults to $SPATIAL_REASONING_DATA, else ./data; the result is DATA_ROOT/cifar-10-batches-bin/.
# Environment:
#   CIFAR10_BASE_URL          base URL of the archive (default https://www.cs.toronto.edu/~kriz)
#   SPATIAL_REASONING_MIRROR  base URL for every dataset (CIFAR10_BASE_URL wins over it)
#   CIFAR10_MD5               expected MD5 (default c32a1d4ab5d03f1284b67883e8d87530, the published value)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
fetch_dataset "cifar10" "cifar-10-binary.tar.gz" "${CIFAR10_MD5:-c32a1d4ab5d03f1284b67883e8d87530}" "cifar-10-batches-bin" \
    "${CIFAR10_BASE_URL:-${SPATIAL_REASONING_MIRROR:-https://www.cs.toronto.edu/~kriz}}" "${1:-}"
