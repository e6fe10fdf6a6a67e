#!/usr/bin/env bash
# Fast inner loop for developers: build the extension in build/dev and drop it next to the
# Python sources, so `PYTHONPATH=python pytest` runs the tree as it is (no pip install).
# Extra arguments go to cmake's configure step (e.g. -DCMAKE_BUILD_TYPE=Debug).
set -euo pipefail
cd "$(dirname "$0")/.."
bdir=${EDGEPACK_BUILD_DIR:-build/dev}
pybind11_dir=$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')
cmake -S . -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$pybind11_dir" \
  -DPython_EXECUTABLE="$(command -v python3)" "$@" >/dev/null
cmake --build "$bdir" -j"$(nproc)"
cp -f "$bdir"/_core*.so python/edgepack/
