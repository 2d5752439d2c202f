#!/usr/bin/env bash
# The GPU suite on a lent GPU machine, in one call, from the repository root:
#
#     bash benchmarks/run_gpu.sh
#
# Installs the package without the network (that machine has torch, triton, pytest-benchmark
# and matplotlib, and no network), runs the suite on CUDA into "$OUT/benchmarks/results"
# (results.json, results.md, one PNG per op: six files, two folders down, so all come back),
# and prints the table. File them under benchmarks/results/<GPU name>/ in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name the folder whose contents come back from the GPU machine}"
results="$OUT/benchmarks/results"

python3 -m pip install -q -e . --no-deps --no-build-isolation
python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; \
print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
status=0
python3 -m benchmarks.run --device cuda --output "$results" || status=$?
if [[ -f "$results/results.md" ]]; then
    cat "$results/results.md"
fi
exit "$status"
