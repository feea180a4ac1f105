// Multi-tensor steps: every tensor of a step in one call, in at most two passes over memory
// per tensor (a read pass over the gradient for clip norms, then the fused update). With
// clipnorm alone (not global_clipnorm, not skip_nonfinite), a tensor of at most kChunkElems
// elements is normed by its own update instead, while its gradient is in cache.
// Front ends fill TensorSlots with raw pointers, pick an Executor, and call apply<Rule>.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dispatch.h"
#include "parallel.h"
#include "rules.h"

namespace pyopt {

// One tensor of a step. slots[k] is the rule's slot k (Rule::kSlots), null for an optional
// slot that is not given. All arrays hold `size` elements of T and do not overlap.
template <class T>
struct TensorSlots {
  T* param = nullptr;
  const T* grad = nullptr;
  T* slots[kMaxSlots] = {};
  std::int64_t size = 0;
  double weight_decay = 0.0;
};

template <class T>
bool all_finite(const std::vector<TensorSlots<T>>& tensors) {
  for (const auto& t : tensors)
    for (std::int64_t i = 0; i < t.size; ++i)
      if (!std::isfinite(double(load(t.grad[i])))) return false;
  return true;
}

namespace detail {
// The scale of a tensor whose clip norm its own update computes (see norms_in_update);
// real scales are in [0, 1] or NaN.
constexpr double kNormInUpdate = -1.0;

// With clipnorm alone (no global norm, no non-finite check), a tensor that lies in one slice
// needs no norm pass: its update computes ||g|| first, on the same thread, while g is in
// cache. Returns, per tensor, whether it is such a tensor (none for other options).
inline std::vector<char> norms_in_update(const ChunkPlan& plan, std::size_t num_tensors, const GradientOptions& opt) {
  std::vector<char> in_update(num_tensors, 0);
  if (!(opt.clipnorm > 0.0) || opt.global_clipnorm > 0.0 || opt.skip_nonfinite) return in_update;
  std::vector<int> slices_of(num_tensors, 0);
  for (const Slice& sl : plan.slices) ++slices_of[size_t(sl.tensor)];
  for (std::size_t t = 0; t < num_tensors; ++t) in_update[t] = slices_of[t] == 1;
  return in_update;
}
}  // namespace detail

// Per-tensor gradient scale factors of a step. Returns false when the step must be skipped
// (skip_nonfinite and some gradient is not finite). With allow_norms_in_update (for the
// dense update pass, which computes those norms), the tensors detail::norms_in_update marks
// get detail::kNormInUpdate and the norm pass skips them. *pass_ran: whether a pass ran.
template <class T>
bool gradient_scales(const std::vector<TensorSlots<T>>& tensors, const ChunkPlan& plan, const GradientOptions& opt,
                     const Executor& exec, std::vector<double>& scales, bool allow_norms_in_update = false,
                     bool* pass_ran = nullptr) {
  scales.assign(tensors.size(), 1.0);
  if (pass_ran) *pass_ran = false;
  const bool clip = opt.clipnorm > 0.0 || opt.global_clipnorm > 0.0;
  if (!clip && !opt.skip_nonfinite) return true;
  const std::vector<char> in_update =
      allow_norms_in_update ? detail::norms_in_update(plan, tensors.size(), opt) : std::vector<char>(tensors.size(), 0);
  const auto deferred = [&](std::int64_t t) { return in_update[size_t(t)] != 0; };
  bool any_pass = false;
  for (const Slice& sl : plan.slices) any_pass = any_pass || !deferred(sl.tensor);
  std::vector<double> partial(plan.slices.size(), 0.0);
  if (any_pass) {
    for_each_slice(plan, exec, [&](std::int64_t s) {
      const Slice& sl = plan.slices[size_t(s)];
      if (deferred(sl.tensor)) return;
      partial[size_t(s)] = dispatch::sum_of_squares<T>(tensors[size_t(sl.tensor)].grad + sl.begin, sl.end - sl.begin);
    });
    if (pass_ran) *pass_ran = true;
  }
  // Reduce in slice order: deterministic whatever the thread count.
  std::vector<double> sums(tensors.size(), 0.0);
  for (size_t s = 0; s < plan.slices.size(); ++s) sums[size_t(plan.slices[s].tensor)] += partial[s];
  double global = 0.0;
  for (double x : sums) global += x;
  // A non-finite sum means a NaN/Inf element, or finite float64 values whose squares overflow:
  // only the first skips the step (rare path, so a plain scan to tell them apart).
  if (opt.skip_nonfinite && !std::isfinite(global) && !all_finite(tensors)) return false;
  for (size_t t = 0; t < tensors.size(); ++t)
    scales[t] = deferred(std::int64_t(t))   ? detail::kNormInUpdate
                : opt.global_clipnorm > 0.0 ? clip_factor(global, opt.global_clipnorm)
                                            : clip_factor(sums[t], opt.clipnorm);
  return true;
}

// The per-slice update of a rule: (tensor, first element, count, grad scale) -> the rule's
// kernel on the active ISA. Rule::scalars runs once per step (here, in the constructor);
// the tensor's decay (lr*wd) and the clip factor are set per slice.
template <class Rule, class T>
struct Update {
  explicit Update(const typename Rule::Hyper& hyper) : h(hyper), step(Rule::scalars(hyper)) {}
  typename Rule::Hyper h;
  typename Rule::Scalars step;
  void operator()(const TensorSlots<T>& t, std::int64_t b, std::int64_t n, double scale) const {
    typename Rule::Scalars s = step;
    s.decay = h.lr * t.weight_decay;
    s.grad_scale = scale;
    T* slots[kMaxSlots] = {};
    for (std::size_t k = 0; k < Rule::kSlots.size(); ++k) slots[k] = t.slots[k] ? t.slots[k] + b : nullptr;
    Rule::template with_kernel<T>(h, t.weight_decay != 0.0, [&](auto kernel) {
      dispatch::update<decltype(kernel), Rule::kSlots.size()>(t.param + b, t.grad + b, slots, n, s);
    });
  }
};

namespace detail {
template <class T>
std::vector<std::int64_t> sizes_of(const std::vector<TensorSlots<T>>& tensors) {
  std::vector<std::int64_t> sizes;
  sizes.reserve(tensors.size());
  for (const auto& t : tensors) sizes.push_back(t.size);
  return sizes;
}

// The update pass: update(tensor, first, count, scale) over every slice. A tensor with
// scale kNormInUpdate lies in one slice and is clipped to `clipnorm` (> 0) by its own norm,
// c / max(||g||, c), computed here (the same sum the norm pass would give).
template <class T, class Update>
void update_pass(const std::vector<TensorSlots<T>>& tensors, const ChunkPlan& plan, const std::vector<double>& scales,
                 const Executor& exec, const Update& update, bool after_norm_pass = false, double clipnorm = 0.0) {
  for_each_slice(
      plan, exec,
      [&](std::int64_t s) {
        const Slice& sl = plan.slices[size_t(s)];
        const TensorSlots<T>& t = tensors[size_t(sl.tensor)];
        double scale = scales[size_t(sl.tensor)];
        if (scale == kNormInUpdate) scale = clip_factor(dispatch::sum_of_squares<T>(t.grad, t.size), clipnorm);
        update(t, sl.begin, sl.end - sl.begin, scale);
      },
      /*reverse=*/after_norm_pass);
}

// Dense multi-tensor step: clip scales (a norm pass where one is needed), then the update pass.
template <class T, class Update>
bool apply_multi(const std::vector<TensorSlots<T>>& tensors, const GradientOptions& opt, const Executor& exec,
                 const Update& update) {
  const ChunkPlan plan = plan_chunks(sizes_of(tensors));
  std::vector<double> scales;
  bool norm_pass_ran = false;
  if (!gradient_scales(tensors, plan, opt, exec, scales, /*allow_norms_in_update=*/true, &norm_pass_ran)) return false;
  update_pass(tensors, plan, scales, exec, update, norm_pass_ran, opt.clipnorm);
  return true;
}
}  // namespace detail

// One step of Rule on every tensor. Returns false (and writes nothing) when the step was
// skipped as non-finite. Hyperparameters must have passed check<Rule>(); front ends validate
// before calling.
template <class Rule, class T>
bool apply(const std::vector<TensorSlots<T>>& tensors, const typename Rule::Hyper& h, const GradientOptions& opt,
           const Executor& exec) {
  return detail::apply_multi(tensors, opt, exec, Update<Rule, T>(h));
}

}  // namespace pyopt
