#!/usr/bin/env bash
# The GPU acceptance run, in one go on a CUDA machine (H100/H200): the CUDA tests (masks
# bit-identical to the NumPy reference, bf16 included), then the GPU benchmarks, which write
# their sections of BENCHMARKS.md. Usage, from the repository root after `make install`:
#   bash bench/gpu_check.sh            # tests + benchmarks
#   QUICK=1 bash bench/gpu_check.sh    # tests + one short benchmark pass (no --write)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); assert torch.cuda.is_available()"
# Every CUDA test: Triton kernels vs the NumPy reference, then the whole suite's CUDA paths.
"$PY" -m pytest -q -x -p no:cacheprovider tests/rng/test_backends.py
"$PY" -m pytest -q -p no:cacheprovider -k "cuda or gpu or triton" tests
if [[ -n "${QUICK:-}" ]]; then
  "$PY" bench/gpu_dropout.py --repeats 3
  exit 0
fi
"$PY" bench/gpu_dropout.py --write
"$PY" bench/mc_dropout.py --device cuda --write
"$PY" bench/droppath.py --device cuda --write
