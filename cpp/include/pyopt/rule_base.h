// What every rule trait (rules/<rule>.h) is made of, the one range check over a trait's table,
// and what is common to every rule (the gradient options, weight decay, the clip factor).
//
// Every rule: g is the gradient after clipping, g * c/max(||g||, c) with c = clipnorm (the
// tensor's own norm) or c = global_clipnorm (the norm over all gradients of the step), and
// weight decay is decoupled: p = p - lr*wd*p before the rule's update.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

namespace pyopt {

// f(std::bool_constant<b>{}...) for runtime bools b...: a rule's with_kernel picks its Kernel's
// template switches with it, f(Kernel<T, decltype(b)::value...>{}).
template <class F>
void with_bools(F&& f) {
  f();
}
template <class F, class... Bools>
void with_bools(F&& f, bool first, Bools... rest) {
  if (first)
    with_bools([&](auto... b) { f(std::true_type{}, b...); }, rest...);
  else
    with_bools([&](auto... b) { f(std::false_type{}, b...); }, rest...);
}

// ------------------------------------------------------------------------------ hyperparameter tables

constexpr double kInf = std::numeric_limits<double>::infinity();

// The values a hyperparameter may take: finite, from low to high (each end open or closed;
// high = kInf: no upper bound).
struct Range {
  double low, high;
  bool low_open, high_open;
  bool integer;  // an int64 in every front end (step)
};
constexpr Range at_least(double low) { return {low, kInf, false, true, false}; }                  // [low, inf)
constexpr Range above(double low) { return {low, kInf, true, true, false}; }                      // (low, inf)
constexpr Range closed(double low, double high) { return {low, high, false, false, false}; }      // [low, high]
constexpr Range closed_open(double low, double high) { return {low, high, false, true, false}; }  // [low, high)
constexpr Range open_closed(double low, double high) { return {low, high, true, false, false}; }  // (low, high]
constexpr Range integer_at_least(double low) { return {low, kInf, false, true, true}; }           // an integer >= low

struct NoFields {};

// A hyperparameter: a float64 scalar in every front end (an int64 when its range is integer),
// held as a double in the rule's Hyper (`field`; null for the rule-generic ones below).
template <class H = NoFields>
struct Param {
  const char* name;
  double H::* field;
  double value;  // the default (Keras')
  Range range;
  const char* doc;        // what it is, for the TF op docs (the range is added there)
  bool optional = false;  // may be left off: None in Python, 0 in the TF ops
  // Set: a value other than 0 needs the optional slot whose `given` flag this is (RMSprop's
  // momentum needs its momentum buffers); without them the value must be 0.
  bool H::* needs = nullptr;
};

// A flag of a rule: a bool attr of its TF ops and a keyword of its NumPy functions, default false.
template <class H>
struct Flag {
  const char* name;
  bool H::* field;
  const char* doc;
};

// A slot: an array per variable, shaped like it (a resource input of the TF ops, a list of
// arrays of the NumPy functions). An optional slot is given for every variable or for none;
// `given` (a flag with no attr or keyword of its own) says which.
template <class H>
struct Slot {
  const char* name;  // the TF input and the C++ name: "m"
  const char* list;  // the NumPy argument: "ms"
  const char* doc;
  Flag<H> given = {nullptr, nullptr, nullptr};  // set: the slot is optional
  constexpr bool optional() const { return given.field != nullptr; }
};

// The learning rate, the first hyperparameter of every rule (Hyper::lr).
template <class H>
constexpr Param<H> learning_rate(double value) {
  return {"lr", &H::lr, value, at_least(0), "learning rate"};
}

// The front ends take a rule's slots in table order, the optional ones last.
template <class Rule>
constexpr bool optional_slots_last() {
  bool optional_seen = false;
  for (const auto& s : Rule::kSlots) {
    if (optional_seen && !s.optional()) return false;
    optional_seen = optional_seen || s.optional();
  }
  return true;
}

namespace detail {
inline std::string fmt(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}
}  // namespace detail

// "a finite number >= 0", "in [0, 1)", "an integer >= 1": what a value must be.
inline std::string range_text(const Range& r) {
  if (r.high == kInf)
    return std::string(r.integer ? "an integer " : "a finite number ") + (r.low_open ? "> " : ">= ") +
           detail::fmt(r.low);
  return std::string("in ") + (r.low_open ? "(" : "[") + detail::fmt(r.low) + ", " + detail::fmt(r.high) +
         (r.high_open ? ")" : "]");
}

inline bool in_range(const Range& r, double x) {
  return std::isfinite(x) && (r.low_open ? x > r.low : x >= r.low) && (r.high_open ? x < r.high : x <= r.high);
}

// The one range check: "" when x is valid, else "beta_1 must be in [0, 1), got 1.5".
template <class H>
std::string check_range(const Param<H>& p, double x) {
  if (in_range(p.range, x)) return "";
  return std::string(p.name) + " must be " + range_text(p.range) + (p.optional ? " (or None)" : "") + ", got " +
         detail::fmt(x);
}

// Every hyperparameter of a rule in its range, in table order: "" or the first message.
template <class Rule>
std::string check_ranges(const typename Rule::Hyper& h) {
  for (const auto& p : Rule::kParams)
    if (std::string e = check_range(p, h.*p.field); !e.empty()) return e;
  return "";
}

// The optional slot that a hyperparameter needs (Param::needs), or null.
template <class Rule>
constexpr const Slot<typename Rule::Hyper>* needed_slot(const Param<typename Rule::Hyper>& p) {
  if (p.needs == nullptr) return nullptr;
  for (const auto& s : Rule::kSlots)
    if (s.optional() && s.given.field == p.needs) return &s;
  return nullptr;
}

// Every Param::needs of a rule is the `given` flag of one of its optional slots.
// (Member pointers are compared, not needed_slot's result: a pointer into kSlots is no constant
// expression to GCC under AddressSanitizer.)
template <class Rule>
constexpr bool needs_optional_slots() {
  for (const auto& p : Rule::kParams) {
    if (p.needs == nullptr) continue;
    bool found = false;
    for (const auto& s : Rule::kSlots) found = found || (s.optional() && s.given.field == p.needs);
    if (!found) return false;
  }
  return true;
}

// The hyperparameters of a step whose optional slots are set in h (their `given` flags): in
// range, and a value that needs a slot is 0 without it. "" or the first message.
template <class Rule>
std::string check(const typename Rule::Hyper& h) {
  if (std::string e = check_ranges<Rule>(h); !e.empty()) return e;
  for (const auto& p : Rule::kParams)
    if (p.needs != nullptr && h.*p.field != 0.0 && !(h.*p.needs))
      return std::string(p.name) + " must be 0 when no " + needed_slot<Rule>(p)->list + " are given, got " +
             detail::fmt(h.*p.field);
  return "";
}

// The table's defaults, flags off.
template <class Rule>
typename Rule::Hyper defaults() {
  typename Rule::Hyper h{};
  for (const auto& p : Rule::kParams) h.*p.field = p.value;
  return h;
}

// ------------------------------------------------------------------------------ rule-generic options

// How gradients are prepared before the update. 0 means "off" for both norms.
struct GradientOptions {
  double clipnorm = 0.0;         // clip each gradient by its own L2 norm
  double global_clipnorm = 0.0;  // clip all gradients by their joint L2 norm
  bool skip_nonfinite = false;   // skip the whole step if any gradient holds NaN/Inf
};

inline constexpr Param<GradientOptions> kClipnorm{
    "clipnorm", &GradientOptions::clipnorm, 0.0, above(0), "clip each gradient by its own L2 norm", true};
inline constexpr Param<GradientOptions> kGlobalClipnorm{
    "global_clipnorm", &GradientOptions::global_clipnorm,           0.0,
    above(0),          "clip all gradients by their joint L2 norm", true};
// Per tensor (TensorSlots::weight_decay): p = p - lr*wd*p before the update.
inline constexpr Param<> kWeightDecay{"weight_decay", nullptr, 0.0, at_least(0),
                                      "decoupled weight decay p -= lr*weight_decay*p before the update"};

inline std::string check_weight_decay(double wd) { return check_range(kWeightDecay, wd); }

// A threshold of 0 is off; one that is set must be in its range.
inline std::string check_gradient_options(const GradientOptions& o) {
  for (const auto& p : {kClipnorm, kGlobalClipnorm})
    if (o.*p.field != 0.0)
      if (std::string e = check_range(p, o.*p.field); !e.empty()) return e;
  if (o.clipnorm != 0.0 && o.global_clipnorm != 0.0)
    return "clipnorm and global_clipnorm are mutually exclusive: set at most one";
  return "";
}

// Clip factor c / max(norm, c): 1 below the threshold, NaN when the norm is NaN (as Keras).
inline double clip_factor(double sum_of_squares, double clip) {
  if (!(clip > 0.0)) return 1.0;
  const double norm = std::sqrt(sum_of_squares);
  if (std::isnan(norm)) return norm;
  return clip / (norm > clip ? norm : clip);
}

}  // namespace pyopt
