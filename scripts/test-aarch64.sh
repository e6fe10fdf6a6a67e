#!/usr/bin/env bash
# ARM64 under emulation: cross-build the C++ kernel self-test for aarch64 (same CMake, same
# per-ISA flags as a native aarch64 build) and run it under qemu-user twice:
#   -cpu cortex-a53  (Raspberry Pi 3 class: NEON, no dotprod) -> must select neon, must not run neon_dotprod
#   -cpu max         (every extension qemu knows: dotprod, i8mm)  -> must select neon_dotprod
# and, as extra real cores, cortex-a72 (Pi 4: neon) and cortex-a76 (Pi 5: neon_dotprod).
# Exits non-zero on any kernel mismatch or detection mismatch. qemu timings mean nothing: this
# checks exactness and runtime detection, not speed.
#
# Environment: EDGEPACK_AARCH64_BUILD_DIR (default build/aarch64), EDGEPACK_NO_APT=1 to never
# install packages (fail instead when something is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bdir=${EDGEPACK_AARCH64_BUILD_DIR:-build/aarch64}
sysroot=/usr/aarch64-linux-gnu

need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v cmake >/dev/null || need+=(cmake)
if ((${#need[@]})); then
  if [[ ${EDGEPACK_NO_APT:-0} == 1 ]]; then
    echo "test-aarch64: missing ${need[*]} (EDGEPACK_NO_APT=1, not installing)" >&2
    exit 2
  fi
  sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  echo "test-aarch64: installing ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B "$bdir" "${gen[@]}" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchain-aarch64.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DEDGEPACK_PYTHON=OFF -DEDGEPACK_SELFTEST=ON >"$bdir.configure.log" 2>&1 ||
  { cat "$bdir.configure.log"; exit 1; }
grep -E "edgepack: (built paths|the compiler lacks)" "$bdir.configure.log" || true
# Both ARM paths must be compiled in, or the two runs below would prove nothing.
grep -q "built paths: .*neon;neon_dotprod" "$bdir.configure.log" ||
  { echo "test-aarch64: the cross compiler did not build both neon and neon_dotprod" >&2; exit 1; }
cmake --build "$bdir" -j"$(nproc)" --target kernel_selftest

status=0
run() {  # run <qemu cpu> <selftest args...>
  local cpu=$1; shift
  echo
  echo "== qemu-aarch64 -cpu $cpu: kernel_selftest $*"
  if qemu-aarch64 -L "$sysroot" -cpu "$cpu" "$bdir/kernel_selftest" "$@"; then
    echo "== -cpu $cpu: PASS"
  else
    echo "== -cpu $cpu: FAIL (exit $?)"
    status=1
  fi
}
run cortex-a53 --expect-best neon --expect-unavailable neon_dotprod
run max --expect-best neon_dotprod
# Two more real cores, cheap to add: Raspberry Pi 4 (no dotprod) and Cortex-A76 / Pi 5 (dotprod).
run cortex-a72 --expect-best neon --expect-unavailable neon_dotprod
run cortex-a76 --expect-best neon_dotprod
echo
if ((status)); then echo "test-aarch64: FAILED"; else echo "test-aarch64: every CPU model passed"; fi
exit $status
