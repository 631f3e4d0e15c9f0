#!/usr/bin/env bash
# The package index of torch for an image variant: the Dockerfile's TORCH_VARIANT build
# argument (cpu or cuda) and TORCH_CUDA (the CUDA build, cu12x) in, one URL out.
#   deploy/dataflow/torch_index.sh cpu          -> PyTorch's CPU wheels (no CUDA libraries)
#   deploy/dataflow/torch_index.sh cuda cu128   -> PyTorch's CUDA 12.8 wheels (the GPU image)
set -euo pipefail
variant="${1:-cpu}"
cuda="${2:-cu128}"
case "$variant" in
  cpu) echo "https://download.pytorch.org/whl/cpu" ;;
  cuda)
    if [[ ! "$cuda" =~ ^cu12[0-9]$ ]]; then
      echo "TORCH_CUDA must be a CUDA 12 build such as cu128, not '$cuda'" >&2
      exit 2
    fi
    echo "https://download.pytorch.org/whl/$cuda"
    ;;
  *)
    echo "TORCH_VARIANT must be cpu or cuda, not '$variant'" >&2
    exit 2
    ;;
esac
