// Test driver of the header-only kernel core (cpp/include/pyopt), no framework and no
// Python: meant to run under AddressSanitizer + UndefinedBehaviorSanitizer (tools/sanitize.sh).
//
//   pyopt_core_tests [section...]      sections: conversions plan pool checks kernels multi sparse
//
// Every rule of PYOPT_RULES (each combination of its flags and optional slots), storage type
// (float, double, half, bfloat16) and ISA path this CPU runs, through apply<Rule> with an inline, a reversed and a
// ThreadPool executor, at sizes 0..70, 1023 and 2^16+5, from start pointers offset by 0..3 elements, against a scalar
// double reference written here (formulas and float16/bfloat16 rounding coded independently of the core). Prints a
// summary line; exits 1 on any failure.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#else
#define HAVE_MXCSR 0
#endif

#include "pyopt/apply.h"
#include "pyopt/rules.h"
#include "pyopt/sparse.h"

using namespace pyopt;
using i64 = std::int64_t;

// ------------------------------------------------------------------------------ checks

static long g_checks = 0, g_failures = 0;

template <class... A>
static void check(bool ok, const char* fmt, A... args) {
  ++g_checks;
  if (ok) return;
  if (++g_failures <= 30) {
    std::printf("FAIL: ");
    std::printf(fmt, args...);
    std::printf("\n");
  }
}

// ------------------------------------------------------------------------------ reference formats
// A binary float format: `mant` fraction bits, minimum normal exponent `emin`, max `emax`.
struct Format {
  int mant, emin, emax, exp_bits;
  double eps() const { return std::ldexp(1.0, -mant); }
  double smallest_subnormal() const { return std::ldexp(1.0, emin - mant); }
};
constexpr Format kHalf{10, -14, 15, 5};
constexpr Format kBfloat16{7, -126, 127, 8};

// x rounded to the format, to nearest even (Inf past the largest finite value).
static double round_to(double x, const Format& f) {
  if (!std::isfinite(x) || x == 0.0) return x;
  int e;
  std::frexp(std::fabs(x), &e);  // |x| in [2^(e-1), 2^e)
  const double ulp = std::ldexp(1.0, std::max(e - 1, f.emin) - f.mant);
  const double y = std::nearbyint(std::fabs(x) / ulp) * ulp;  // default rounding: ties to even
  const double largest = std::ldexp(2.0 - std::ldexp(1.0, -f.mant), f.emax);
  return std::copysign(y > largest ? INFINITY : y, x);
}

// Bits of a value already representable in the format (NaN -> a quiet NaN).
static std::uint16_t encode(double y, const Format& f) {
  const int bias = (1 << (f.exp_bits - 1)) - 1;
  const std::uint16_t sign = std::signbit(y) ? std::uint16_t(1u << 15) : 0;
  const std::uint16_t exp_all = std::uint16_t(((1u << f.exp_bits) - 1) << f.mant);
  if (std::isnan(y)) return std::uint16_t(exp_all | (1u << (f.mant - 1)));
  if (std::isinf(y)) return std::uint16_t(sign | exp_all);
  const double a = std::fabs(y);
  if (a < std::ldexp(1.0, f.emin)) return std::uint16_t(sign | std::uint16_t(a / f.smallest_subnormal()));
  int e;
  std::frexp(a, &e);
  const auto frac = std::uint16_t((a / std::ldexp(1.0, e - 1) - 1.0) * std::ldexp(1.0, f.mant));
  return std::uint16_t(sign | std::uint16_t((e - 1 + bias) << f.mant) | frac);
}

static double decode(std::uint16_t b, const Format& f) {
  const int bias = (1 << (f.exp_bits - 1)) - 1;
  const int exp = (b >> f.mant) & ((1 << f.exp_bits) - 1);
  const int frac = b & ((1 << f.mant) - 1);
  const double sign = (b >> 15) ? -1.0 : 1.0;
  if (exp == (1 << f.exp_bits) - 1) return frac ? NAN : sign * INFINITY;
  if (exp == 0) return sign * frac * f.smallest_subnormal();
  return sign * std::ldexp(1.0 + frac * f.eps(), exp - bias);
}

// Per storage type: name, reference conversions, tolerance (see tests/test_kernels.py:
// k * eps * (scale + |expected|), k=4 for float/double, 2 for the 16-bit types whose
// result is rounded once from float maths).
template <class T>
struct Traits;
template <>
struct Traits<float> {
  static constexpr const char* name = "float";
  static double to_double(float x) { return x; }
  static float from_double(double x) { return float(x); }
  static double rtol() { return 4 * 0x1p-23; }
  static double atol() { return 0.0; }
};
template <>
struct Traits<double> {
  static constexpr const char* name = "double";
  static double to_double(double x) { return x; }
  static double from_double(double x) { return x; }
  static double rtol() { return 4 * 0x1p-52; }
  static double atol() { return 0.0; }
};
template <>
struct Traits<half> {
  static constexpr const char* name = "half";
  static double to_double(half x) { return decode(x.bits, kHalf); }
  static half from_double(double x) { return half{encode(round_to(x, kHalf), kHalf)}; }
  static double rtol() { return 2 * kHalf.eps(); }
  static double atol() { return 2 * kHalf.smallest_subnormal(); }
};
template <>
struct Traits<bfloat16> {
  static constexpr const char* name = "bfloat16";
  static double to_double(bfloat16 x) { return decode(x.bits, kBfloat16); }
  static bfloat16 from_double(double x) { return bfloat16{encode(round_to(x, kBfloat16), kBfloat16)}; }
  static double rtol() { return 2 * kBfloat16.eps(); }
  static double atol() { return 2 * kBfloat16.smallest_subnormal(); }
};

template <class T>
static bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

static bool same_value(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

// ------------------------------------------------------------------------------ conversions

static float float_from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Floats to feed store<T>: a sweep of bit patterns, every value of the format and the
// midpoints (and their float neighbours) between consecutive values.
template <class T>
static std::vector<float> store_probes(const Format& f) {
  std::vector<float> xs;
  for (std::uint64_t u = 0; u < (1ull << 32); u += 4099) xs.push_back(float_from_bits(std::uint32_t(u)));
  for (std::uint32_t b = 0; b < 0x7fffu; ++b) {  // positive patterns; non-finite neighbours skipped
    const double lo = decode(std::uint16_t(b), f), hi = decode(std::uint16_t(b + 1), f);
    if (!std::isfinite(lo) || !std::isfinite(hi)) continue;
    const float mid = float((lo + hi) / 2);  // exact in float for both formats
    for (float x : {float(lo), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float x : {65504.0f, 65519.99f, 65520.0f, 1e30f, INFINITY, -INFINITY, 0.0f, -0.0f, 3.4028235e38f})
    xs.push_back(x);
  return xs;
}

template <class T>
static void test_conversions(const Format& f) {
  const char* name = Traits<T>::name;
  long bad_load = 0, bad_trip = 0, bad_nan = 0, bad_store = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const T x{std::uint16_t(b)};
    const double want = decode(std::uint16_t(b), f);
    const float got = load(x);
    bad_load += !same_value(got, want);
    std::uint32_t gb;
    std::memcpy(&gb, &got, 4);
    if (std::isnan(want)) {
      const T back = store<T>(got);
      bad_nan += !std::isnan(decode(back.bits, f));  // NaN stays NaN (quiet), never Inf
    } else {
      bad_trip += store<T>(got).bits != b;  // every value survives load -> store exactly
    }
  }
  check(bad_load == 0, "%s load: %ld of 65536 bit patterns decode wrongly", name, bad_load);
  check(bad_trip == 0, "%s round trip: %ld of the non-NaN bit patterns change", name, bad_trip);
  check(bad_nan == 0, "%s: %ld NaN patterns do not stay NaN", name, bad_nan);
  for (float x : store_probes<T>(f)) {
    const std::uint16_t got = store<T>(x).bits;
    const std::uint16_t want = encode(round_to(x, f), f);
    const bool ok = std::isnan(x) ? std::isnan(decode(got, f)) : got == want;
    if (!ok && ++bad_store <= 5) std::printf("  %s store(%a): got 0x%04x want 0x%04x\n", name, double(x), got, want);
  }
  check(bad_store == 0, "%s store: %ld values not rounded to nearest even", name, bad_store);
}

// TensorFlow runs its kernels with FTZ/DAZ set (denormal floats read and written as 0).
// half's subnormals are normal floats, so loading them must not depend on those modes.
// Conversions behind opaque calls, so the compiler cannot move them across _mm_setcsr.
__attribute__((noinline)) static void load_halfs(const std::uint16_t* in, float* out, int n) {
  for (int i = 0; i < n; ++i) out[i] = load(half{in[i]});
}
__attribute__((noinline)) static void store_halfs(const float* in, std::uint16_t* out, int n) {
  for (int i = 0; i < n; ++i) out[i] = store<half>(in[i]).bits;
}
static void (*volatile g_load_halfs)(const std::uint16_t*, float*, int) = load_halfs;
static void (*volatile g_store_halfs)(const float*, std::uint16_t*, int) = store_halfs;

static void test_half_under_daz() {
#if HAVE_MXCSR
  std::vector<std::uint16_t> bits, stored(0x3ff);
  std::vector<float> values, loaded(0x3ff);
  for (std::uint16_t b = 1; b < 0x0400u; ++b) {  // the positive half subnormals
    bits.push_back(b);
    values.push_back(float(decode(b, kHalf)));
  }
  const unsigned old = _mm_getcsr();
  _mm_setcsr(old | 0x8040u);  // FTZ | DAZ
  g_load_halfs(bits.data(), loaded.data(), int(bits.size()));
  g_store_halfs(values.data(), stored.data(), int(bits.size()));
  _mm_setcsr(old);
  long bad = 0, bad_store = 0;
  for (size_t i = 0; i < bits.size(); ++i) {
    bad += loaded[i] != values[i];
    bad_store += stored[i] != bits[i];
  }
  check(bad == 0, "half load under FTZ/DAZ: %ld of 1023 subnormal halfs load wrongly (e.g. as 0)", bad);
  check(bad_store == 0, "half store under FTZ/DAZ: %ld of 1023 subnormal halfs stored wrongly", bad_store);
#endif
}

static void section_conversions() {
  test_conversions<half>(kHalf);
  test_conversions<bfloat16>(kBfloat16);
  test_half_under_daz();
}

// ------------------------------------------------------------------------------ plan_chunks

static void check_plan(const std::vector<i64>& sizes, i64 chunk) {
  const ChunkPlan plan = plan_chunks(sizes, chunk);
  i64 total = 0;
  for (i64 s : sizes) total += s;
  check(plan.total == total, "plan total %lld != %lld", (long long)plan.total, (long long)total);
  // Every element of every tensor in exactly one slice; slices ordered by tensor, then begin.
  std::vector<i64> next(sizes.size(), 0);
  i64 prev_tensor = -1;
  for (const Slice& s : plan.slices) {
    const bool ok = s.tensor >= prev_tensor && s.tensor < i64(sizes.size()) && s.begin == next[size_t(s.tensor)] &&
                    s.end > s.begin && s.end <= sizes[size_t(s.tensor)] && s.end - s.begin <= chunk &&
                    s.begin % chunk == 0;  // each tensor is cut at its own multiples of the chunk
    check(ok, "plan(chunk %lld): bad slice {%lld, %lld, %lld}", (long long)chunk, (long long)s.tensor,
          (long long)s.begin, (long long)s.end);
    if (!ok) return;
    prev_tensor = s.tensor;
    next[size_t(s.tensor)] = s.end;
  }
  for (size_t t = 0; t < sizes.size(); ++t)
    check(next[t] == sizes[t], "plan: tensor %zu covered up to %lld of %lld", t, (long long)next[t],
          (long long)sizes[t]);
  // Chunks: contiguous ranges of slices from 0 to the end, none empty (unless nothing to do),
  // each holding at most `chunk` elements.
  const auto& cs = plan.chunk_start;
  check(cs.size() >= 2 && cs.front() == 0 && cs.back() == i64(plan.slices.size()), "plan: chunk_start ends");
  for (size_t k = 0; k + 1 < cs.size(); ++k) {
    check(cs[k] < cs[k + 1] || plan.slices.empty(), "plan: empty chunk %zu", k);
    i64 elems = 0;
    for (i64 s = cs[k]; s < cs[k + 1]; ++s) elems += plan.slices[size_t(s)].end - plan.slices[size_t(s)].begin;
    check(elems <= chunk, "plan: chunk %zu holds %lld > %lld elements", k, (long long)elems, (long long)chunk);
  }
}

static void section_plan() {
  std::mt19937_64 rng(7);
  check_plan({}, kChunkElems);
  check_plan({0, 0}, kChunkElems);
  check_plan({kChunkElems}, kChunkElems);
  check_plan({kChunkElems - 1, 1, kChunkElems + 1, 0, 3 * kChunkElems}, kChunkElems);
  for (int trial = 0; trial < 2000; ++trial) {
    const i64 chunk = std::vector<i64>{1, 2, 7, 32, 100, 1024}[rng() % 6];
    std::vector<i64> sizes(rng() % 8);
    for (auto& s : sizes) s = (rng() % 4 == 0) ? 0 : i64(rng() % (5 * chunk + 3));
    check_plan(sizes, chunk);
  }
}

// ------------------------------------------------------------------------------ ThreadPool

static void section_pool() {
  for (int threads = 1; threads <= 4; ++threads) {
    ThreadPool pool(threads);
    check(pool.size() == threads, "pool size %d", threads);
    for (i64 n = 0; n <= 100; n += (n < 10 ? 1 : 13)) {
      std::vector<std::atomic<int>> hits(size_t(n) + 1);
      pool.parallel_for(n, [&](i64 b, i64 e) {
        for (i64 i = b; i < e; ++i) hits[size_t(i)]++;
      });
      long bad = 0;
      for (i64 i = 0; i < n; ++i) bad += hits[size_t(i)].load() != 1;
      check(bad == 0, "pool(%d).parallel_for(%lld): %ld indices not run exactly once", threads, (long long)n, bad);
    }
  }
  // Two callers at once on one pool (the second runs inline), and a resize in between.
  ThreadPool pool(3);
  std::atomic<long> bad{0};
  auto caller = [&] {
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(37);
      pool.parallel_for(37, [&](i64 b, i64 e) {
        for (i64 i = b; i < e; ++i) hits[size_t(i)]++;
      });
      for (auto& h : hits) bad += h.load() != 1;
    }
  };
  std::thread a(caller), b(caller);
  pool.resize(2);
  a.join();
  b.join();
  check(bad == 0, "concurrent parallel_for: %ld indices not run exactly once", bad.load());
}

// ------------------------------------------------------------------------------ the rules under test

// Calls f(Rule{}) for every rule of the list.
template <class F>
static void for_each_rule(F&& f) {
#define PYOPT_TEST_RULE(Rule) f(Rule{});
  PYOPT_RULES(PYOPT_TEST_RULE)
#undef PYOPT_TEST_RULE
}

// Per rule, written here independently of the core: hyperparameters for the tests (flags off),
// the initial value of slot k (of Rule::kSlots) of an element from a normal sample x (earlier[j]:
// its slot j < k, when given), and the update of one element in double (p: after weight decay;
// *s[k]: slot k, updated in place; null for an optional slot not given). A rule without a Reference does not compile
// here: add one with the rule.
template <class Rule>
struct Reference;

template <>
struct Reference<GradientDescent> {
  static GradientDescent::Hyper hyper() { return {0.1}; }
  static double slot(int, double, const double*) { return 0.0; }
  static double update(const GradientDescent::Hyper& h, double p, double g, double* const*) { return p - h.lr * g; }
};

template <>
struct Reference<Momentum> {
  static Momentum::Hyper hyper() { return {0.05, 0.9, false}; }
  static double slot(int, double x, const double*) { return 0.1 * x; }
  static double update(const Momentum::Hyper& h, double p, double g, double* const* s) {
    double& m = *s[0];
    m = h.momentum * m - h.lr * g;
    return h.nesterov ? p + h.momentum * m - h.lr * g : p + m;
  }
};

template <>
struct Reference<Adam> {
  static Adam::Hyper hyper() { return {0.01, 0.9, 0.999, 1e-7, 5, false}; }
  // m: 0.1 x;  v: 0.01 x^2 (>= 0);  vhat: 0.01 x^2 + v (>= v on most elements)
  static double slot(int k, double x, const double* earlier) {
    return k == 0 ? 0.1 * x : k == 1 ? 0.01 * x * x : 0.01 * x * x + earlier[1];
  }
  static double update(const Adam::Hyper& h, double p, double g, double* const* s) {
    const double alpha = h.lr * std::sqrt(1 - std::pow(h.beta_2, h.step)) / (1 - std::pow(h.beta_1, h.step));
    double &m = *s[0], &v = *s[1];
    m = h.beta_1 * m + (1 - h.beta_1) * g;
    v = h.beta_2 * v + (1 - h.beta_2) * g * g;
    double denom_v = v;
    if (h.amsgrad) denom_v = *s[2] = std::max(*s[2], v);
    return p - alpha * m / (std::sqrt(denom_v) + h.epsilon);
  }
};

template <>
struct Reference<Adagrad> {
  static Adagrad::Hyper hyper() { return {0.01, 1e-7}; }
  // the accumulator: 0.1 + 0.01 x^2 (Keras starts it at 0.1; > 0)
  static double slot(int, double x, const double*) { return 0.1 + 0.01 * x * x; }
  static double update(const Adagrad::Hyper& h, double p, double g, double* const* s) {
    double& acc = *s[0];
    acc += g * g;
    return p - h.lr * g / std::sqrt(acc + h.epsilon);
  }
};

template <>
struct Reference<Rmsprop> {
  static Rmsprop::Hyper hyper() { return {0.01, 0.9, 0.8, 1e-7, false, false}; }
  // v: 0.01 + 0.01 x^2;  b: 0.01 x;  a: 0.5 sqrt(v) x/(1+|x|), so a^2 < v/4 (a mean gradient
  // and mean square of one history have a^2 <= v)
  static double slot(int k, double x, const double* earlier) {
    return k == 0 ? 0.01 + 0.01 * x * x : k == 1 ? 0.01 * x : 0.5 * std::sqrt(earlier[0]) * x / (1 + std::fabs(x));
  }
  static double update(const Rmsprop::Hyper& h, double p, double g, double* const* s) {
    double& v = *s[0];
    v = h.rho * v + (1 - h.rho) * g * g;
    double denominator = v + h.epsilon;
    if (s[2]) {
      double& a = *s[2];
      a = h.rho * a + (1 - h.rho) * g;
      denominator = v - a * a + h.epsilon;
    }
    double step = h.lr * g / std::sqrt(denominator);
    if (s[1]) step = *s[1] = h.momentum * *s[1] + step;
    return p - step;
  }
};

template <>
struct Reference<Adamax> {
  static Adamax::Hyper hyper() { return {0.01, 0.9, 0.999, 1e-7, 5}; }
  // m: 0.1 x;  u: 0.1 |x| (>= 0)
  static double slot(int k, double x, const double*) { return k == 0 ? 0.1 * x : 0.1 * std::fabs(x); }
  static double update(const Adamax::Hyper& h, double p, double g, double* const* s) {
    double &m = *s[0], &u = *s[1];
    m = h.beta_1 * m + (1 - h.beta_1) * g;
    u = std::max(h.beta_2 * u, std::fabs(g));
    return p - h.lr * m / ((1 - std::pow(h.beta_1, h.step)) * (u + h.epsilon));
  }
};

template <>
struct Reference<Nadam> {
  static Nadam::Hyper hyper() { return {0.01, 0.9, 0.999, 1e-7, 5, 0.05}; }
  // m: 0.1 x;  v: 0.01 x^2 (>= 0)
  static double slot(int k, double x, const double*) { return k == 0 ? 0.1 * x : 0.01 * x * x; }
  static double update(const Nadam::Hyper& h, double p, double g, double* const* s) {
    const double u_t = h.beta_1 * (1 - 0.5 * std::pow(0.96, h.step));
    const double u_next = h.beta_1 * (1 - 0.5 * std::pow(0.96, h.step + 1));
    double &m = *s[0], &v = *s[1];
    m = h.beta_1 * m + (1 - h.beta_1) * g;
    v = h.beta_2 * v + (1 - h.beta_2) * g * g;
    const double m_hat = u_next * m / (1 - h.u_product * u_next) + (1 - u_t) * g / (1 - h.u_product);
    const double v_hat = v / (1 - std::pow(h.beta_2, h.step));
    return p - h.lr * m_hat / (std::sqrt(v_hat) + h.epsilon);
  }
};

template <>
struct Reference<Lion> {
  // beta_1 = 0.5: b1*m and (1-b1)*g are exact in every type, so the sign of their sum is the exact
  // sum's in float and in double (with 0.9 a sum near 0 takes either sign from rounding alone).
  static Lion::Hyper hyper() { return {0.01, 0.5, 0.99}; }
  static double slot(int, double x, const double*) { return 0.1 * x; }
  static double update(const Lion::Hyper& h, double p, double g, double* const* s) {
    double& m = *s[0];
    const double c = h.beta_1 * m + (1 - h.beta_1) * g;
    m = h.beta_2 * m + (1 - h.beta_2) * g;
    return p - h.lr * (c > 0 ? 1.0 : c < 0 ? -1.0 : 0.0);
  }
};

// One variant of a rule: its flags and which optional slots are given, and a weight decay.
template <class Rule>
struct Config {
  typename Rule::Hyper hyper;
  double weight_decay;
  // The slot arrays in use: the required ones, then the optional ones given.
  int slots() const {
    int n = 0;
    for (const auto& s : Rule::kSlots) n += !s.optional() || hyper.*s.given.field;
    return n;
  }
  // The rule's slot (index into Rule::kSlots) of slot array j in use.
  int slot_of(int j) const {
    for (int k = 0; k < int(Rule::kSlots.size()); ++k) {
      const auto& s = Rule::kSlots[size_t(k)];
      if ((!s.optional() || hyper.*s.given.field) && j-- == 0) return k;
    }
    return -1;
  }
  std::string name() const {
    std::string n = Rule::kName;
    for (const auto& f : Rule::kFlags)
      if (hyper.*f.field) n += std::string("+") + f.name;
    for (const auto& s : Rule::kSlots)
      if (s.optional() && hyper.*s.given.field) n += std::string("+") + s.given.name;
    if (weight_decay != 0.0) n += "+wd";
    return n;
  }
};

// Every combination of the rule's flags and optional slots, without and with weight decay.
template <class Rule>
static std::vector<Config<Rule>> all_configs() {
  std::vector<bool Rule::Hyper::*> switches;
  for (const auto& f : Rule::kFlags) switches.push_back(f.field);
  for (const auto& s : Rule::kSlots)
    if (s.optional()) switches.push_back(s.given.field);
  std::vector<Config<Rule>> out;
  for (double wd : {0.0, 0.1})
    for (size_t bits = 0; bits < (size_t(1) << switches.size()); ++bits) {
      Config<Rule> c{Reference<Rule>::hyper(), wd};
      for (size_t k = 0; k < switches.size(); ++k) c.hyper.*switches[k] = (bits >> k) & 1;
      for (const auto& p : Rule::kParams)  // a value that needs a slot not given is 0
        if (p.needs != nullptr && !(c.hyper.*p.needs)) c.hyper.*p.field = 0.0;
      out.push_back(c);
    }
  return out;
}

// ------------------------------------------------------------------------------ hyperparameter checks

// Values just outside a range: NaN, +-Inf, and past each end.
static std::vector<double> outside(const Range& r) {
  std::vector<double> xs = {NAN, INFINITY, -INFINITY};
  xs.push_back(r.low_open ? r.low : r.integer ? r.low - 1 : std::nextafter(r.low, -INFINITY));
  if (r.high != kInf) xs.push_back(r.high_open ? r.high : std::nextafter(r.high, INFINITY));
  return xs;
}

template <class Rule>
static void checks_for_rule() {
  const auto valid = defaults<Rule>();
  check(check<Rule>(valid).empty(), "%s: the defaults are valid", Rule::kName);
  check(check_ranges<Rule>(Reference<Rule>::hyper()).empty(), "%s: the test hyperparameters are valid", Rule::kName);
  for (const auto& p : Rule::kParams) {
    auto h = valid;
    h.*p.field = p.range.low;
    check(check<Rule>(h).empty() == !p.range.low_open, "%s: %s at its low end", Rule::kName, p.name);
    for (double x : outside(p.range)) {
      h.*p.field = x;
      const std::string msg = check<Rule>(h);
      check(msg.rfind(std::string(p.name) + " must be ", 0) == 0, "%s: %s = %g: message '%s' should name it first",
            Rule::kName, p.name, x, msg.c_str());
    }
  }
}

static void section_checks() {
  for_each_rule([](auto rule) { checks_for_rule<decltype(rule)>(); });
  // The exact words (the Python front ends word theirs the same).
  Momentum::Hyper mom = defaults<Momentum>();
  mom.momentum = 1.0;
  check(check<Momentum>(mom).empty(), "momentum 1 is valid");
  const std::vector<std::pair<std::string, std::string>> words = {
      {check<GradientDescent>({-1.0}), "lr must be a finite number >= 0, got -1"},
      {check<GradientDescent>({NAN}), "lr must be a finite number >= 0, got nan"},
      {check<Momentum>({0.1, 1.5, false}), "momentum must be in [0, 1], got 1.5"},
      {check<Adam>({0.1, 1.0, 0.9, 1e-7, 1, false}), "beta_1 must be in [0, 1), got 1"},
      {check<Adam>({0.1, 0.9, INFINITY, 1e-7, 1, false}), "beta_2 must be in [0, 1), got inf"},
      {check<Adam>({0.1, 0.9, 0.9, 0.0, 1, false}), "epsilon must be a finite number > 0, got 0"},
      {check<Adam>({0.1, 0.9, 0.9, 1e-7, 0, false}), "step must be an integer >= 1, got 0"},
      {check<Rmsprop>({0.01, 0.9, 0.5, 1e-7, false, false}),
       "momentum must be 0 when no momentum_buffers are given, got 0.5"},
      {check<Rmsprop>({0.01, 0.9, 0.5, 1e-7, true, false}), ""},
      {check<Rmsprop>({0.01, 0.9, 0.0, 1e-7, false, true}), ""},
      {check<Lion>({0.01, 0.0, 0.99}), "beta_1 must be in (0, 1], got 0"},
      {check<Lion>({0.01, 1.0, 0.99}), ""},
      {check_weight_decay(-0.5), "weight_decay must be a finite number >= 0, got -0.5"},
      {check_gradient_options(GradientOptions{-1.0, 0.0, false}),
       "clipnorm must be a finite number > 0 (or None), got -1"},
      {check_gradient_options(GradientOptions{0.0, NAN, false}),
       "global_clipnorm must be a finite number > 0 (or None), got nan"},
      {check_gradient_options(GradientOptions{1.0, 1.0, false}),
       "clipnorm and global_clipnorm are mutually exclusive: set at most one"},
      {check_gradient_options(GradientOptions{0.0, 0.0, true}), ""},
  };
  for (const auto& [got, want] : words) check(got == want, "check message '%s', want '%s'", got.c_str(), want.c_str());
}

// ------------------------------------------------------------------------------ kernels

// One tensor in double: param, grad, slots.
struct RefTensor {
  std::vector<double> a[2 + kMaxSlots];  // 0 param, 1 grad, 2.. slots
  double weight_decay = 0.0;
};

// The update in double, with gradient scale `scale` (clipping) and decoupled weight decay.
template <class Rule>
static void ref_update(const Config<Rule>& c, RefTensor& t, double scale) {
  auto& p = t.a[0];
  const double decay = c.hyper.lr * t.weight_decay;
  for (size_t i = 0; i < p.size(); ++i) {
    double* s[kMaxSlots] = {};
    for (int k = 0; k < c.slots(); ++k) s[c.slot_of(k)] = &t.a[2 + k][i];
    p[i] = Reference<Rule>::update(c.hyper, p[i] - decay * p[i], t.a[1][i] * scale, s);
  }
}

static double clip_scale(double sum_sq, double clip) {
  if (clip <= 0) return 1.0;
  return clip / std::max(std::sqrt(sum_sq), clip);
}

// Sum of squares with Neumaier's compensated summation: accurate to about one rounding, so
// the reference norm is not the less accurate side.
static double sum_of_squares(const std::vector<double>& g) {
  double sum = 0, comp = 0;
  for (double x : g) {
    const double y = x * x, t = sum + y;
    comp += std::fabs(sum) >= y ? (sum - t) + y : (y - t) + sum;
    sum = t;
  }
  return sum + comp;
}

template <class Rule>
static void ref_step(const Config<Rule>& c, std::vector<RefTensor>& ts, const GradientOptions& o) {
  double global = 0;
  std::vector<double> sums;
  for (auto& t : ts) {
    sums.push_back(sum_of_squares(t.a[1]));
    global += sums.back();
  }
  for (size_t k = 0; k < ts.size(); ++k)
    ref_update(c, ts[k],
               o.global_clipnorm > 0 ? clip_scale(global, o.global_clipnorm) : clip_scale(sums[k], o.clipnorm));
}

// Storage of one tensor in T: `offset` guard elements in front of each array (start
// pointer offset by that many elements), checked untouched afterwards.
template <class T>
struct Stored {
  std::vector<T> buf[2 + kMaxSlots];
  int offset = 0;
  i64 size = 0;
  T* ptr(int k) { return buf[k].data() + offset; }
};

template <class T>
static T guard_value() {
  T x;
  std::memset(&x, 0x5a, sizeof x);
  return x;
}

template <class T>
static Stored<T> store_tensor(const RefTensor& r, int nslots, int offset) {
  Stored<T> s;
  s.offset = offset;
  s.size = i64(r.a[0].size());
  for (int k = 0; k < 2 + nslots; ++k) {
    s.buf[k].assign(size_t(offset), guard_value<T>());
    for (double x : r.a[k]) s.buf[k].push_back(Traits<T>::from_double(x));
  }
  return s;
}

// Every tensor stored, tensor k at offsets[k].
template <class T>
static std::vector<Stored<T>> store_all(const std::vector<RefTensor>& ts, int nslots, const std::vector<int>& offsets) {
  std::vector<Stored<T>> st;
  for (size_t k = 0; k < ts.size(); ++k) st.push_back(store_tensor<T>(ts[k], nslots, offsets[k]));
  return st;
}

// Every array of every tensor bitwise equal (guards included).
template <class T>
static bool same_stored(const std::vector<Stored<T>>& a, const std::vector<Stored<T>>& b) {
  bool same = a.size() == b.size();
  for (size_t k = 0; same && k < a.size(); ++k)
    for (size_t arr = 0; arr < 2 + kMaxSlots; ++arr) same = same && same_bits(a[k].buf[arr], b[k].buf[arr]);
  return same;
}

// A random tensor, already rounded to T (so the reference starts from the stored values).
template <class T, class Rule>
static RefTensor random_tensor(const Config<Rule>& c, i64 n, double wd, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  RefTensor t;
  t.weight_decay = wd;
  for (int k = 0; k < 2 + c.slots(); ++k) {
    for (i64 i = 0; i < n; ++i) {
      double x = normal(rng);
      if (k >= 2) {
        double earlier[kMaxSlots] = {};
        for (int j = 0; j < k - 2; ++j) earlier[c.slot_of(j)] = t.a[2 + j][size_t(i)];
        x = Reference<Rule>::slot(c.slot_of(k - 2), x, earlier);
      }
      t.a[k].push_back(Traits<T>::to_double(Traits<T>::from_double(x)));
    }
  }
  return t;
}

template <class T, class Rule>
static bool run_apply(const Config<Rule>& c, std::vector<Stored<T>>& st, const std::vector<RefTensor>& ref,
                      const GradientOptions& o, const Executor& exec) {
  std::vector<TensorSlots<T>> ts(st.size());
  for (size_t k = 0; k < st.size(); ++k) {
    ts[k].param = st[k].ptr(0);
    ts[k].grad = st[k].ptr(1);
    for (int s = 0; s < c.slots(); ++s) ts[k].slots[c.slot_of(s)] = st[k].ptr(2 + s);
    ts[k].size = st[k].size;
    ts[k].weight_decay = ref[k].weight_decay;
  }
  return apply<Rule>(ts, c.hyper, o, exec);
}

struct NamedExecutor {
  const char* name;
  Executor exec;
};

static std::vector<NamedExecutor> executors(ThreadPool& pool) {
  return {
      {"inline", run_inline},
      {"reversed",
       [](i64 n, const std::function<void(i64, i64)>& fn) {
         for (i64 i = n - 1; i >= 0; --i) fn(i, i + 1);
       }},
      {"pool", [&pool](i64 n, const std::function<void(i64, i64)>& fn) { pool.parallel_for(n, fn); }},
  };
}

// Runs one step on every ISA x executor; checks each against the reference (tolerance),
// against the first run (bitwise), and the guards and the gradient untouched.
template <class T, class Rule>
static void check_step(const Config<Rule>& c, const std::vector<RefTensor>& initial, const std::vector<int>& offsets,
                       const GradientOptions& o, ThreadPool& pool) {
  std::vector<RefTensor> expected = initial;
  ref_step(c, expected, o);
  std::vector<std::vector<T>> first;
  const int arrays = 2 + c.slots();
  i64 total = 0;
  for (const RefTensor& t : initial) total += i64(t.a[0].size());
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (const NamedExecutor& ex : executors(pool)) {
      if (total <= kChunkElems && std::string(ex.name) != "inline") continue;  // one chunk: always inline
      std::vector<Stored<T>> st = store_all<T>(initial, c.slots(), offsets);
      const std::vector<Stored<T>> before = st;
      const bool applied = run_apply(c, st, initial, o, ex.exec);
      char where[160];
      std::snprintf(where, sizeof where, "%s %s isa=%s exec=%s tensors=%zu size0=%lld offset0=%d clip=%g/%g",
                    c.name().c_str(), Traits<T>::name, isa_name(isa), ex.name, initial.size(),
                    (long long)initial[0].a[0].size(), offsets[0], o.clipnorm, o.global_clipnorm);
      check(applied, "%s: returned false", where);
      std::vector<T> flat;
      for (size_t k = 0; k < st.size(); ++k) {
        const Stored<T>& s = st[k];
        check(same_bits(s.buf[1], before[k].buf[1]), "%s: gradient written", where);
        for (int a = 0; a < arrays; ++a) {
          for (int i = 0; i < s.offset; ++i)
            check(std::memcmp(&s.buf[a][size_t(i)], &before[k].buf[a][size_t(i)], sizeof(T)) == 0,
                  "%s: guard before array %d written", where, a);
          if (a == 1) continue;
          const std::vector<double>& want = expected[k].a[a];
          double scale = 0;
          for (size_t i = 0; i < want.size(); ++i)
            scale = std::max({scale, std::fabs(want[i]), std::fabs(initial[k].a[a][i])});
          long bad = 0;
          size_t first_bad = 0;
          for (size_t i = 0; i < want.size(); ++i) {
            const double got = Traits<T>::to_double(s.buf[a][size_t(s.offset) + i]);
            const double tol = Traits<T>::rtol() * (scale + std::fabs(want[i])) + Traits<T>::atol();
            if (!(std::fabs(got - want[i]) <= tol) && bad++ == 0) first_bad = i;
          }
          check(bad == 0, "%s: tensor %zu array %d: %ld elements off, first [%zu] got %.9g want %.9g", where, k, a, bad,
                first_bad, bad ? Traits<T>::to_double(s.buf[a][size_t(s.offset) + first_bad]) : 0.0,
                bad ? want[first_bad] : 0.0);
          flat.insert(flat.end(), s.buf[a].begin() + s.offset, s.buf[a].end());
        }
      }
      if (first.empty())
        first.push_back(flat);
      else
        check(same_bits(flat, first[0]), "%s: not bitwise equal to the first ISA/executor", where);
    }
  }
  set_active_isa(supported_isas().back());
}

template <class T, class Rule>
static void kernels_for_rule(ThreadPool& pool, std::mt19937_64& rng) {
  std::vector<i64> sizes;
  for (i64 n = 0; n <= 70; ++n) sizes.push_back(n);
  sizes.push_back(1023);
  sizes.push_back((1 << 16) + 5);
  for (const Config<Rule>& c : all_configs<Rule>()) {
    for (i64 n : sizes) {
      for (int offset = 0; offset <= 3; ++offset) {
        if (n >= 1023 && offset != 0 && offset != 3) continue;  // large sizes: aligned and misaligned
        const RefTensor t = random_tensor<T>(c, n, c.weight_decay, rng);
        const double clip = 0.5 * std::sqrt(sum_of_squares(t.a[1])) + 1e-3;  // active for every n > 0
        for (double clipnorm : {0.0, clip})
          check_step<T>(c, {t}, {offset}, GradientOptions{clipnorm, 0.0, false}, pool);
      }
    }
  }
}

template <class T>
static void kernels_for_type(ThreadPool& pool) {
  std::mt19937_64 rng(42);
  for_each_rule([&](auto rule) { kernels_for_rule<T, decltype(rule)>(pool, rng); });
}

static void section_kernels() {
  ThreadPool pool(3);
  kernels_for_type<float>(pool);
  kernels_for_type<double>(pool);
  kernels_for_type<half>(pool);
  kernels_for_type<bfloat16>(pool);
}

// Several tensors per step (each from another offset, with its own weight decay), clipped
// by their own norms or the global one; and skip_nonfinite.
template <class T, class Rule>
static void multi_for_rule(ThreadPool& pool, std::mt19937_64& rng) {
  const std::vector<i64> sizes = {17, 0, 40000, 1023, 70001, 7};
  const std::vector<int> offsets = {1, 0, 3, 2, 1, 0};
  const std::vector<double> decays = {0.0, 0.1, 0.3, 0.0, 0.05, 1.0};
  for (const Config<Rule>& c : all_configs<Rule>()) {
    if (c.weight_decay == 0.0) continue;  // decays come per tensor here
    std::vector<RefTensor> ts;
    for (size_t k = 0; k < sizes.size(); ++k) ts.push_back(random_tensor<T>(c, sizes[k], decays[k], rng));
    check_step<T>(c, ts, offsets, GradientOptions{0.0, 0.0, false}, pool);
    check_step<T>(c, ts, offsets, GradientOptions{30.0, 0.0, false}, pool);
    check_step<T>(c, ts, offsets, GradientOptions{0.0, 100.0, false}, pool);
    // skip_nonfinite: a NaN or Inf anywhere -> false, nothing written.
    for (double bad : {double(NAN), double(INFINITY), -double(INFINITY)}) {
      std::vector<Stored<T>> st = store_all<T>(ts, c.slots(), offsets);
      st[4].ptr(1)[12345] = Traits<T>::from_double(bad);
      const std::vector<Stored<T>> before = st;
      const bool applied = run_apply(c, st, ts, GradientOptions{0.0, 0.0, true}, executors(pool)[2].exec);
      const bool same = same_stored(st, before);
      check(!applied && same, "%s %s skip_nonfinite(%g): applied=%d, untouched=%d", c.name().c_str(), Traits<T>::name,
            bad, int(applied), int(same));
    }
  }
  // clipnorm alone norms the tensors of one slice (17, 32768, 7) inside their update; with
  // skip_nonfinite every norm comes from the norm pass. With finite gradients: the same bits.
  // A clipnorm of 0.5 is below every tensor's norm, so each scale depends on its norm.
  const std::vector<i64> edge_sizes = {17, 0, kChunkElems, kChunkElems + 1, 7};
  const std::vector<int> edge_offsets = {1, 0, 0, 3, 2};
  for (const Config<Rule>& c : all_configs<Rule>()) {
    if (c.weight_decay == 0.0) continue;
    std::vector<RefTensor> ts;
    for (size_t k = 0; k < edge_sizes.size(); ++k) ts.push_back(random_tensor<T>(c, edge_sizes[k], 0.1, rng));
    check_step<T>(c, ts, edge_offsets, GradientOptions{0.5, 0.0, false}, pool);
    for (const NamedExecutor& ex : executors(pool)) {
      std::vector<Stored<T>> in_update = store_all<T>(ts, c.slots(), edge_offsets);
      std::vector<Stored<T>> from_pass = in_update;
      const bool a = run_apply(c, in_update, ts, GradientOptions{0.5, 0.0, false}, ex.exec);
      const bool b = run_apply(c, from_pass, ts, GradientOptions{0.5, 0.0, true}, ex.exec);
      check(a && b && same_stored(in_update, from_pass),
            "%s %s exec=%s: clipnorm normed in the update differs from the norm pass's", c.name().c_str(),
            Traits<T>::name, ex.name);
    }
  }
}

// Which tensors the update pass norms itself: those of one slice, and only with clipnorm alone.
static void section_norms_in_update() {
  const ChunkPlan plan = plan_chunks({17, 0, kChunkElems, kChunkElems + 1, 7});
  const std::vector<char> clipnorm = detail::norms_in_update(plan, 5, GradientOptions{1.0, 0.0, false});
  check(clipnorm == std::vector<char>({1, 0, 1, 0, 1}), "norms_in_update(clipnorm) marks the wrong tensors");
  for (const GradientOptions& o : {GradientOptions{1.0, 0.0, true}, GradientOptions{0.0, 1.0, false},
                                   GradientOptions{0.0, 0.0, false}, GradientOptions{0.0, 0.0, true}})
    check(detail::norms_in_update(plan, 5, o) == std::vector<char>(5, 0),
          "norms_in_update marks tensors for clipnorm=%g global_clipnorm=%g skip_nonfinite=%d", o.clipnorm,
          o.global_clipnorm, int(o.skip_nonfinite));
}

template <class T>
static void multi_for_type(ThreadPool& pool) {
  std::mt19937_64 rng(3);
  for_each_rule([&](auto rule) { multi_for_rule<T, decltype(rule)>(pool, rng); });
}

static void section_multi() {
  ThreadPool pool(3);
  multi_for_type<float>(pool);
  multi_for_type<double>(pool);
  multi_for_type<half>(pool);
  multi_for_type<bfloat16>(pool);
}

// ------------------------------------------------------------------------------ sparse (row) steps
// apply_sparse on [rows, row_size] parameters with `nnz` gradient rows (duplicates summed):
// dense-equivalent mode == the dense reference step with the densified gradient; lazy mode
// == that step on the rows present, every other row (and its slots) bitwise untouched.

template <class T, class Rule>
static bool run_sparse(const Config<Rule>& c, std::vector<Stored<T>>& st, const std::vector<i64>& row_sizes,
                       const std::vector<std::vector<i64>>& indices, const std::vector<std::vector<T>>& values,
                       const std::vector<RefTensor>& ref, bool lazy, const GradientOptions& o, const Executor& exec) {
  std::vector<SparseTensorSlots<T>> ts(st.size());
  for (size_t k = 0; k < st.size(); ++k) {
    ts[k].param = st[k].ptr(0);
    for (int s = 0; s < c.slots(); ++s) ts[k].slots[c.slot_of(s)] = st[k].ptr(2 + s);
    ts[k].row_size = row_sizes[k];
    ts[k].rows = row_sizes[k] ? st[k].size / row_sizes[k] : 0;
    ts[k].values = values[k].data();
    ts[k].indices = indices[k].data();
    ts[k].nnz = i64(indices[k].size());
    ts[k].weight_decay = ref[k].weight_decay;
    check(check_indices(ts[k].indices, ts[k].nnz, ts[k].rows).empty(), "sparse test: indices in range");
  }
  return apply_sparse<Rule>(ts, c.hyper, lazy, o, exec);
}

template <class T, class Rule>
static void sparse_for_rule(ThreadPool& pool, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  const std::vector<std::pair<i64, i64>> shapes = {{0, 3}, {1, 1}, {5, 17}, {300, 3}, {40, 130}, {2000, 33}};
  for (const Config<Rule>& c : all_configs<Rule>()) {
    for (size_t sh = 0; sh + 1 < shapes.size(); ++sh) {
      // Two parameters per step: shapes[sh] and shapes[sh + 1].
      std::vector<RefTensor> dense;
      std::vector<i64> row_sizes;
      std::vector<std::vector<i64>> indices;
      std::vector<std::vector<T>> values;
      std::vector<std::vector<bool>> present;
      for (size_t k = sh; k <= sh + 1; ++k) {
        const auto [rows, row_size] = shapes[k];
        RefTensor t = random_tensor<T>(c, rows * row_size, c.weight_decay * double(k % 2), rng);
        std::fill(t.a[1].begin(), t.a[1].end(), 0.0);                  // the densified gradient, summed below
        const i64 nnz = rows ? i64(rng() % size_t(2 * rows + 1)) : 0;  // duplicates likely
        std::vector<i64> idx;
        std::vector<T> val;
        std::vector<bool> pres(size_t(rows), false);
        for (i64 n = 0; n < nnz; ++n) {
          const i64 r = i64(rng() % size_t(rows));
          idx.push_back(r);
          pres[size_t(r)] = true;
          for (i64 j = 0; j < row_size; ++j) {
            const T x = Traits<T>::from_double(normal(rng));
            val.push_back(x);
            t.a[1][size_t(r * row_size + j)] += Traits<T>::to_double(x);
          }
        }
        dense.push_back(t);
        row_sizes.push_back(row_size);
        indices.push_back(idx);
        values.push_back(val);
        present.push_back(pres);
      }
      for (bool lazy : {false, true}) {
        for (const GradientOptions& o :
             {GradientOptions{}, GradientOptions{2.0, 0.0, false}, GradientOptions{0.0, 3.0, false}}) {
          std::vector<RefTensor> expected = dense;
          ref_step(c, expected, o);
          for (const NamedExecutor& ex : executors(pool)) {
            if (std::string(ex.name) == "reversed") continue;  // inline and pool suffice here
            std::vector<Stored<T>> st;
            for (size_t k = 0; k < dense.size(); ++k) st.push_back(store_tensor<T>(dense[k], c.slots(), int(k)));
            const std::vector<Stored<T>> before = st;
            const bool applied = run_sparse(c, st, row_sizes, indices, values, dense, lazy, o, ex.exec);
            check(applied, "sparse %s %s: returned false", c.name().c_str(), Traits<T>::name);
            for (size_t k = 0; k < st.size(); ++k) {
              long bad = 0, touched = 0;
              for (int a = 0; a < 2 + c.slots(); ++a) {
                if (a == 1) continue;
                double scale = 0;
                for (size_t i = 0; i < dense[k].a[a].size(); ++i)
                  scale = std::max({scale, std::fabs(dense[k].a[a][i]), std::fabs(expected[k].a[a][i])});
                for (size_t i = 0; i < dense[k].a[a].size(); ++i) {
                  const T got = st[k].buf[a][size_t(st[k].offset) + i];
                  if (lazy && !present[k][i / size_t(row_sizes[k])]) {
                    touched += std::memcmp(&got, &before[k].buf[a][size_t(st[k].offset) + i], sizeof(T)) != 0;
                    continue;
                  }
                  const double want = expected[k].a[a][i];
                  // 16-bit types: duplicates are summed in float and rounded to T before the
                  // step, one more rounding of the gradient than the reference has.
                  const double tol = 2 * Traits<T>::rtol() * (scale + std::fabs(want)) + Traits<T>::atol();
                  bad += !(std::fabs(Traits<T>::to_double(got) - want) <= tol);
                }
              }
              check(bad == 0 && touched == 0,
                    "sparse %s %s lazy=%d clip=%g/%g exec=%s tensor %zu (%lld x %lld): "
                    "%ld elements off, %ld absent-row elements written",
                    c.name().c_str(), Traits<T>::name, int(lazy), o.clipnorm, o.global_clipnorm, ex.name, k,
                    (long long)(st[k].size / std::max<i64>(1, row_sizes[k])), (long long)row_sizes[k], bad, touched);
            }
          }
        }
      }
    }
  }
}

template <class T>
static void sparse_for_type(ThreadPool& pool) {
  std::mt19937_64 rng(11);
  for_each_rule([&](auto rule) { sparse_for_rule<T, decltype(rule)>(pool, rng); });
}

static void section_sparse() {
  ThreadPool pool(3);
  sparse_for_type<float>(pool);
  sparse_for_type<double>(pool);
  sparse_for_type<half>(pool);
  sparse_for_type<bfloat16>(pool);
}

// ------------------------------------------------------------------------------ main

int main(int argc, char** argv) {
  const std::vector<std::pair<std::string, void (*)()>> sections = {
      {"conversions", section_conversions}, {"plan", section_plan},       {"pool", section_pool},
      {"checks", section_checks},           {"kernels", section_kernels}, {"multi", section_multi},
      {"norms", section_norms_in_update},   {"sparse", section_sparse},
  };
  std::vector<std::string> wanted(argv + 1, argv + argc);
  std::string isas;
  for (Isa i : supported_isas()) isas += std::string(isas.empty() ? "" : ",") + isa_name(i);
  for (const auto& [name, fn] : sections) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), name) == wanted.end()) continue;
    const long before = g_failures;
    fn();
    std::printf("%-12s %s\n", name.c_str(), g_failures == before ? "ok" : "FAILED");
  }
  for (const std::string& w : wanted) {
    bool known = false;
    for (const auto& s : sections) known = known || s.first == w;
    check(known, "unknown section '%s'", w.c_str());
  }
  std::printf("pyopt core tests: %ld checks, %ld failures (ISAs: %s)\n", g_checks, g_failures, isas.c_str());
  return g_failures == 0 ? 0 : 1;
}
