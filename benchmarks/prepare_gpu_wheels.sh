#!/usr/bin/env bash
# Download, here (with internet), the wheels the GPU machine lacks into .whl/ (git-ignored), so the
# device tool can carry them (benchmarks/GPU.md). The machine has Python 3.12 with torch,
# torchvision, timm, pluggy, pandas, scikit-learn, tabulate, tqdm, matplotlib, numpy, rich, pyyaml
# and opencv, but no internet; ssl-bench also needs mmengine (its Config only) and faiss.
#
# The set (about 19.5 MiB; the carry limit is 64 MiB with the ~30 MiB of Fashion-MNIST):
#   mmengine      ssl-bench's config files
#   addict, yapf, termcolor, platformdirs
#                 what `from mmengine.config import Config` imports and the machine may lack
#                 (mmengine's other requirements -- numpy, pyyaml, rich, matplotlib, opencv -- are there;
#                 yapf needs platformdirs)
#   faiss-cpu     the CPU k-NN backend (cp310-abi3 wheel, runs on 3.12)
# Not carried: faiss-gpu. Its PyPI wheels for CUDA 12 (faiss-gpu-cu12 1.14.1.post1: 48 MB;
# faiss-gpu 1.15.1: 135 MB) exceed what is left of the carry limit, and both need the CUDA 12
# cuBLAS / runtime wheels (hundreds of MB) where the machine's torch ships CUDA 13's; the GPU k-NN
# runs on the torch backend.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(
    mmengine==0.10.7
    addict==2.4.0
    yapf==0.43.0
    termcolor==3.3.0
    platformdirs==4.14.9
    faiss-cpu==1.15.1
)
rm -rf .whl
mkdir -p .whl
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
ls -l .whl
du -ch .whl/*.whl | tail -1
