// The list of update rules, which every front end is generated from.
//
// A rule is one trait in rules/<rule>.h (rules/adam.h shows every part) plus its include and
// one line in PYOPT_RULES below. The NumPy binding, the TF ops and kernels, the multi-tensor and
// sparse steps and the C++ tests read the traits; none of them names a rule.
#pragma once

#include <algorithm>
#include <cstddef>

#include "rule_base.h"

#include "rules/adagrad.h"
#include "rules/adam.h"
#include "rules/adamax.h"
#include "rules/gradient_descent.h"
#include "rules/lion.h"
#include "rules/momentum.h"
#include "rules/nadam.h"
#include "rules/rmsprop.h"

// X(Trait) once per rule, in the order of the front ends' listings. The trait's name is also
// its TF op's: Pyopt>Apply<Trait>[Multi], Pyopt>SparseApply<Trait>Multi, whose Python wrappers
// TF names pyopt_apply_<kName>[_multi]: so the trait is kName in CamelCase (Rmsprop, not RMSprop).
#define PYOPT_RULES(X) \
  X(GradientDescent)   \
  X(Momentum)          \
  X(Adam)              \
  X(Adagrad)           \
  X(Rmsprop)           \
  X(Adamax)            \
  X(Nadam)             \
  X(Lion)

namespace pyopt {

#define PYOPT_CHECK_RULE(Rule)                                                         \
  static_assert(optional_slots_last<Rule>(), #Rule ": optional slots must come last"); \
  static_assert(needs_optional_slots<Rule>(), #Rule ": Param::needs must be an optional slot's flag");
PYOPT_RULES(PYOPT_CHECK_RULE)
#undef PYOPT_CHECK_RULE

// The most slots any rule has: the size of the slot arrays of TensorSlots and SparseTensorSlots.
#define PYOPT_SLOT_COUNT(Rule) Rule::kSlots.size(),
constexpr std::size_t kMaxSlots = std::max({std::size_t(0), PYOPT_RULES(PYOPT_SLOT_COUNT)});
#undef PYOPT_SLOT_COUNT

}  // namespace pyopt
