#!/usr/bin/env bash
# Download CIFAR-100 (cifar-100-binary.tar.gz, official archive) into the data root and verify its MD5.
#
# Usage: data-scripts/cifar100.sh [DATA_ROOT]
#   DATA_ROOT defaults to $SPATIAL_REASONING_DATA, else ./data; the result is DATA_ROOT/cifar-100-binary/.
# Environment:
#   CIFAR100_BASE_URL          base URL of the archive (default https://www.cs.toronto.edu/~kriz)
#   SPATIAL_REASONING_MIRROR  base URL for every dataset (CIFAR100_BASE_URL wins over it)
#   CIFAR100_MD5               expected MD5 (default 03b5dce01913d631647c71ecec9e9cb8, the published value)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
fetch_dataset "cifar100" "cifar-100-binary.tar.gz" "${CIFAR100_MD5:-03b5dce01913d631647c71ecec9e9cb8}" "cifar-100-binary" \
    "${CIFAR100_BASE_URL:-${SPATIAL_REASONING_MIRROR:-https://www.cs.toronto.edu/~kriz}}" "${1:-}"
