// Runtime choice of the instruction set. Each rule's kernel (rules/<rule>.h) and the clip norm
// (kernels.h) are compiled once per ISA with GCC/Clang target attributes (no -march flags at
// build time); the running CPU picks the widest supported path once, PYOPT_ISA=baseline|avx2|avx512
// can narrow it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kernels.h"

namespace pyopt {

enum class Isa { baseline = 0, avx2 = 1, avx512 = 2 };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define PYOPT_X86 1
#define PYOPT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define PYOPT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#else
#define PYOPT_X86 0
#endif

// The ISAs this CPU can run, narrowest first.
inline std::vector<Isa> supported_isas() {
  std::vector<Isa> out{Isa::baseline};
#if PYOPT_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(Isa::avx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    out.push_back(Isa::avx512);
#endif
  return out;
}

inline bool isa_supported(Isa isa) {
  for (Isa s : supported_isas())
    if (s == isa) return true;
  return false;
}

// The widest supported ISA, or PYOPT_ISA when it names a supported one.
inline Isa detect_isa() {
  const std::vector<Isa> isas = supported_isas();
  Isa best = isas.back();
  if (const char* env = std::getenv("PYOPT_ISA")) {
    for (Isa s : isas)
      if (std::strcmp(env, isa_name(s)) == 0) return s;
  }
  return best;
}

// The ISA in use; settable for tests and benchmarks (set_active_isa checks support).
inline Isa& active_isa_ref() {
  static Isa isa = detect_isa();
  return isa;
}
inline Isa active_isa() { return active_isa_ref(); }
inline bool set_active_isa(Isa isa) {
  if (!isa_supported(isa)) return false;
  active_isa_ref() = isa;
  return true;
}

// One function per (kernel, ISA): the same always-inline body compiled for each target.
// update_<ISA> runs a rule's Kernel::run(param, grad, slots[0], ..., slots[S-1], n, s).
#define PYOPT_KERNEL_VARIANTS(ATTR, ISA)                                                             \
  template <class Kernel, class T, class Scalars, std::size_t... S>                                  \
  ATTR void update_##ISA(T* param, const T* grad, T* const* slots, std::int64_t n, const Scalars& s, \
                         std::index_sequence<S...>) {                                                \
    Kernel::run(param, grad, slots[S]..., n, s);                                                     \
  }                                                                                                  \
  template <class T>                                                                                 \
  ATTR double sum_of_squares_##ISA(const T* g, std::int64_t n) {                                     \
    return kernels::sum_of_squares<T>(g, n);                                                         \
  }

namespace dispatch {
PYOPT_KERNEL_VARIANTS(, baseline)
#if PYOPT_X86
PYOPT_KERNEL_VARIANTS(PYOPT_TARGET_AVX2, avx2)
PYOPT_KERNEL_VARIANTS(PYOPT_TARGET_AVX512, avx512)
#endif

// The entry points: call the variant of the active ISA. `slots` holds the rule's NumSlots
// slot pointers (null for an optional slot that is not given).
template <class Kernel, std::size_t NumSlots, class T, class Scalars>
void update(T* param, const T* grad, T* const* slots, std::int64_t n, const Scalars& s) {
  constexpr auto each_slot = std::make_index_sequence<NumSlots>{};
#if PYOPT_X86
  if (active_isa() == Isa::avx512) return update_avx512<Kernel>(param, grad, slots, n, s, each_slot);
  if (active_isa() == Isa::avx2) return update_avx2<Kernel>(param, grad, slots, n, s, each_slot);
#endif
  update_baseline<Kernel>(param, grad, slots, n, s, each_slot);
}

template <class T>
double sum_of_squares(const T* g, std::int64_t n) {
#if PYOPT_X86
  if (active_isa() == Isa::avx512) return sum_of_squares_avx512<T>(g, n);
  if (active_isa() == Isa::avx2) return sum_of_squares_avx2<T>(g, n);
#endif
  return sum_of_squares_baseline<T>(g, n);
}
}  // namespace dispatch

}  // namespace pyopt
