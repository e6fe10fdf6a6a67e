// The kernel table: one immutable table per instruction-set path, built once, chosen at import
// (EDGEPACK_ISA or the best path this CPU runs) and switchable with select_isa().
//
// Each area (quantize, gemm_s8, spmm, attn, norm, conv_s8, conv_f32) owns its own Ops struct in its header; each
// cpp/kernels/<area>/<isa>.cpp defines edgepack::<isa>::register_<area>(KernelTable&), which
// overwrites the entries it implements. build_table(max) starts from scalar and applies every
// built and supported path up to `max` in order, so an op without a file for some path keeps
// the weaker path's entry.
#pragma once
#include "core/isa.h"
#include "kernels/attn/attn.h"
#include "kernels/conv_s8/conv_s8.h"
#include "kernels/conv_f32/conv_f32.h"
#include "kernels/norm/norm.h"
#include "kernels/gemm_s8/gemm_s8.h"
#include "kernels/quantize/quantize.h"
#include "kernels/spmm/spmm.h"

namespace edgepack {

struct KernelTable {
  Isa isa = Isa::scalar;
  QuantizeOps quantize;
  GemmOps gemm;
  SpmmOps spmm;
  AttnOps attn;
  NormOps norm;
  ConvS8Ops conv_s8;
  ConvF32Ops conv_f32;
};

// The active table (one acquire load).
const KernelTable& active();
// Table for a given path (must be available), e.g. for self-tests comparing paths.
const KernelTable& table_for(Isa isa);
// Compiled into this build.
bool isa_built(Isa isa);
// Built and runnable on this CPU.
bool isa_available(Isa isa);
// The best available path.
Isa best_isa();
// Makes `isa` active. Returns false (and changes nothing) when it is not available.
bool select_isa(Isa isa);
// Why `isa` is not available (nullptr when it is; static storage): for avx512_amx the detector's
// reason (CPUID, XCR0, tile palette, the Linux permission request), shown by cpu_info() and in
// set_isa's error. (A C string: ISA translation units include this header, and <string>'s inline
// templates compiled with their flags could be the copies the linker keeps.)
const char* isa_unavailable_reason(Isa isa);

}  // namespace edgepack
