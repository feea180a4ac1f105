// Storage types and float conversions. Standard C++ only.
//
// half and bfloat16 are 16-bit storage types whose maths is done in float; they are
// layout-compatible with Eigen::half / Eigen::bfloat16 (TensorFlow) and ml_dtypes'
// float16 / bfloat16 (NumPy), so front ends reinterpret their buffers as these.
// The conversions are branch-free so the compiler can vectorise them.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__) || defined(__clang__)
#define PYOPT_INLINE inline __attribute__((always_inline))
#else
#define PYOPT_INLINE inline
#endif

namespace pyopt {

struct half {
  std::uint16_t bits;
};
struct bfloat16 {
  std::uint16_t bits;
};
static_assert(sizeof(half) == 2 && sizeof(bfloat16) == 2, "16-bit storage types");

// The type the elementwise maths is done in: float for the 16-bit types.
template <class T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<half> {
  using type = float;
};
template <>
struct ComputeType<bfloat16> {
  using type = float;
};
template <class T>
using compute_t = typename ComputeType<T>::type;

namespace detail {
PYOPT_INLINE std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
PYOPT_INLINE float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

// Load a stored element into its compute type.
PYOPT_INLINE float load(float x) { return x; }
PYOPT_INLINE double load(double x) { return x; }

PYOPT_INLINE float load(bfloat16 x) {
  // bfloat16 is the top half of a float.
  return detail::bits_float(std::uint32_t(x.bits) << 16);
}

PYOPT_INLINE float load(half x) {
  using detail::bits_float;
  using detail::float_bits;
  const std::uint32_t h = x.bits;
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t exp_mant = (h & 0x7fffu) << 13;  // half exponent and mantissa in float position
  const std::uint32_t exp = exp_mant & 0x0f800000u;
  // Normals: re-bias the exponent by 127 - 15 with an integer add.
  const std::uint32_t normal = exp_mant + (112u << 23);
  // Subnormals and zero: (2^-14 + m*2^-24) - 2^-14, both operands normal floats, so the
  // result is exact even with denormals-are-zero (TensorFlow's CPU threads set DAZ/FTZ).
  const std::uint32_t subnormal = float_bits(bits_float(normal + (1u << 23)) - bits_float(113u << 23));
  // Inf/NaN: keep the payload, set every exponent bit.
  const std::uint32_t special = exp_mant | 0x7f800000u;
  const std::uint32_t magnitude = exp == 0x0f800000u ? special : exp == 0 ? subnormal : normal;
  return bits_float(magnitude | sign);
}

// Store a compute value into T, rounding to nearest even.
template <class T>
PYOPT_INLINE T store(compute_t<T> x);

template <>
PYOPT_INLINE float store<float>(float x) {
  return x;
}
template <>
PYOPT_INLINE double store<double>(double x) {
  return x;
}

template <>
PYOPT_INLINE bfloat16 store<bfloat16>(float x) {
  const std::uint32_t u = detail::float_bits(x);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t quiet_nan = (u >> 16) | 0x40u;
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  return bfloat16{std::uint16_t(is_nan ? quiet_nan : rounded)};
}

template <>
PYOPT_INLINE half store<half>(float x) {
  using detail::bits_float;
  using detail::float_bits;
  const std::uint32_t u = float_bits(x);
  const std::uint32_t sign = (u & 0x80000000u) >> 16;
  const std::uint32_t a = u & 0x7fffffffu;
  // |x| >= 65520 rounds to Inf; NaN stays a (quiet) NaN.
  const std::uint32_t overflow = (a > 0x7f800000u) ? 0x7e00u : 0x7c00u;
  // Subnormal half results (|x| < 2^-14): let float addition do the rounding.
  const std::uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  const std::uint32_t subnormal = float_bits(bits_float(a) + bits_float(denorm_magic)) - denorm_magic;
  // Normal results: re-bias the exponent and round the mantissa to nearest even.
  const std::uint32_t normal = (a + ((std::uint32_t(15) - 127u) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  const std::uint32_t magnitude = (a >= ((127u + 16u) << 23)) ? overflow : (a < (113u << 23)) ? subnormal : normal;
  return half{std::uint16_t(magnitude | sign)};
}

enum class DType { float16, bfloat16, float32, float64 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::float32: return "float32";
    case DType::float64: return "float64";
  }
  return "?";
}

}  // namespace pyopt
