#!/usr/bin/env bash
# Builds the C++ kernel self-test with AddressSanitizer + UndefinedBehaviorSanitizer and runs it on
# this x86 machine. The self-test runs every available path (scalar, avx2, avx512, avx512_vnni
# where the CPU has them) through edgepack::table_for, so one run forces every path. Any
# sanitizer report aborts the run (halt_on_error / -fno-sanitize-recover), and the log is
# checked for report banners as a second line of defence.
#
# A second build with ThreadSanitizer runs the same self-test (its thread-pool checks call
# parallel_for from several threads while another resizes the pool); skip it with
# EDGEPACK_SAN_TSAN=0.
#
# A third stage builds the Python extension with ASan+UBSan and runs the kernel tests and the
# kernel-argument fuzzer through it (libasan preloaded into python; leak checking off there,
# since CPython itself keeps memory until exit). Skip it with EDGEPACK_SAN_PYTHON=0; its fuzz
# budget is EDGEPACK_SAN_FUZZ_SECONDS (default 20).
#
# The avx512_amx path: on a CPU without AMX-INT8 every stage is built with EDGEPACK_AMX_EMULATE
# (its kernels run on a scalar model of the tiles, which reads and writes exactly the bytes the
# hardware would), so the AMX kernels, their tails and over-read rules, the per-task tile
# configuration and the AMX-forced thread tests run under ASan/UBSan and TSan here too; on an
# AMX CPU the real instructions are used. EDGEPACK_SAN_AMX_EMULATE=0/1 forces either.
#
# Environment: EDGEPACK_SAN_BUILD_DIR (default build/sanitize; TSan uses <dir>-tsan).
set -euo pipefail
cd "$(dirname "$0")/.."
bdir=${EDGEPACK_SAN_BUILD_DIR:-build/sanitize}
amx_emu=${EDGEPACK_SAN_AMX_EMULATE:-auto}
if [[ $amx_emu == auto ]]; then
  if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then amx_emu=0; else amx_emu=1; fi
fi
amx_flag=-DEDGEPACK_AMX_EMULATE=$([[ $amx_emu == 1 ]] && echo ON || echo OFF)
echo "== avx512_amx: $([[ $amx_emu == 1 ]] && echo "emulated (this CPU has no AMX-INT8)" || echo "the tile instructions")"

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

build() {  # build <dir> <flags>
  mkdir -p "$1"
  # RelWithDebInfo: the optimiser runs as in a release build (some bugs only show there), with
  # line numbers in the reports.
  cmake -S . -B "$1" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEPACK_PYTHON=OFF \
    -DEDGEPACK_SELFTEST=ON "$amx_flag" -DCMAKE_CXX_FLAGS="$2" -DCMAKE_EXE_LINKER_FLAGS="$2" \
    >"$1/configure.log" 2>&1 || { cat "$1/configure.log"; exit 1; }
  grep "edgepack: built paths" "$1/configure.log" || true
  cmake --build "$1" -j"$(nproc)" --target kernel_selftest
}

status=0
check() {  # check <name> <dir> [selftest args]
  local name=$1 dir=$2 rc=0; shift 2
  echo "== $name: kernel_selftest $*"
  "$dir/kernel_selftest" "$@" >"$dir/selftest.log" 2>&1 || rc=$?
  cat "$dir/selftest.log"
  if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|Undefined|Leak|Thread)Sanitizer|WARNING: ThreadSanitizer" "$dir/selftest.log"; then
    echo "== $name: sanitizer report found ($dir/selftest.log)"
    ((rc)) || rc=1
  fi
  if ((rc)); then echo "== $name: FAILED (exit $rc)"; status=1; else echo "== $name: clean"; fi
}

build "$bdir" "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
check "address+undefined" "$bdir" "$@"

if [[ ${EDGEPACK_SAN_TSAN:-1} != 0 ]]; then
  build "$bdir-tsan" "-fsanitize=thread -g"
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  check "thread" "$bdir-tsan" "$@"
fi

if [[ ${EDGEPACK_SAN_PYTHON:-1} != 0 ]]; then
  pdir="$bdir-python"
  flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
  pybind11_dir=$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')
  mkdir -p "$pdir"
  cmake -S . -B "$pdir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR="$pybind11_dir" \
    -DPython_EXECUTABLE="$(command -v python3)" "$amx_flag" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_MODULE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
    >"$pdir/configure.log" 2>&1 || { cat "$pdir/configure.log"; exit 1; }
  cmake --build "$pdir" -j"$(nproc)" --target _core
  rm -rf "$pdir/pkg" && mkdir -p "$pdir/pkg"
  cp -r python/edgepack "$pdir/pkg/"
  rm -f "$pdir"/pkg/edgepack/_core*.so
  cp "$pdir"/_core*.so "$pdir/pkg/edgepack/"
  preload="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
  tests=()
  for f in tests/test_dispatch.py tests/test_quantize*.py tests/test_gemm*.py tests/test_sparse*.py tests/test_attention.py tests/test_conv_int8.py tests/test_conv_f32.py tests/test_stress.py; do
    [[ -e $f ]] && tests+=("$f")
  done
  tests+=(tests/test_amx.py)  # emulated AMX kernels under ASan where the CPU has none (above)
  echo "== python extension under address+undefined: pytest ${tests[*]}; fuzz kernels"
  rc=0
  (
    export LD_PRELOAD="$preload" PYTHONPATH="$PWD/$pdir/pkg" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
      EDGEPACK_STRESS_SECONDS=${EDGEPACK_STRESS_SECONDS:-5}
    python3 -m pytest -q -p no:cacheprovider "${tests[@]}" &&
      python3 tests/_fuzz_targets.py kernels --engine hypothesis --memory-mib 0 \
        --seconds "${EDGEPACK_SAN_FUZZ_SECONDS:-20}" --out "$pdir/fuzz-findings"
  ) >"$pdir/python.log" 2>&1 || rc=$?
  tail -5 "$pdir/python.log"
  if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|Undefined)" "$pdir/python.log"; then
    echo "== python extension: sanitizer report found ($pdir/python.log)"
    ((rc)) || rc=1
  fi
  if ((rc)); then echo "== python extension: FAILED (exit $rc)"; status=1; else echo "== python extension: clean"; fi
fi

if ((status)); then echo "test-sanitizers: FAILED"; else echo "test-sanitizers: zero sanitizer reports, every available path passed"; fi
exit $status
