// Function attributes shared by the CPU kernels.
#pragma once

// The item loops are compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked at load time:
// setup.py builds without -march, which would otherwise leave the FMAs as SSE2 multiply + add.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RTMO_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RTMO_ISA_CLONES
#endif
// Helpers taking or returning GCC vectors are always inlined into one ISA clone, so the vector ABI
// change GCC warns about (-Wpsabi) never crosses a call.
#define RTMO_INLINE inline __attribute__((always_inline))
