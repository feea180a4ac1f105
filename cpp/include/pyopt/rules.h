// Hyperparameters of each update rule, their validation, and the per-step scalars
// (computed once per step in double, then rounded to the compute type by the kernels).
//
// The formulas are Keras 3's (and the optimizer chapter's):
//   gradient descent  p = p - lr*wd*p - lr*g
//   momentum          m = mu*m - lr*g;  p = p - lr*wd*p + m
//                     (nesterov: p = p - lr*wd*p + mu*m - lr*g, with the new m)
//   Adam              t = step;  alpha = lr*sqrt(1-b2^t)/(1-b1^t)
//                     m = m + (g-m)*(1-b1);  v = v + (g^2-v)*(1-b2);  [amsgrad: vhat = max(vhat, v)]
//                     p = p - lr*wd*p - alpha*m/(sqrt(v or vhat) + eps)
// where g is the gradient after clipping: g * c/max(||g||, c) (clipnorm, the tensor's own
// norm) or with the norm over all gradients of the step (global_clipnorm).
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace pyopt {

struct GradientDescentHyper {
  double lr = 0.01;
};

struct MomentumHyper {
  double lr = 0.01;
  double momentum = 0.9;
  bool nesterov = false;
};

struct AdamHyper {
  double lr = 0.001;
  double beta_1 = 0.9;
  double beta_2 = 0.999;
  double epsilon = 1e-7;
  std::int64_t step = 1;  // 1-based: Keras' iterations + 1
  bool amsgrad = false;
};

// How gradients are prepared before the update. 0 means "off" for both norms.
struct GradientOptions {
  double clipnorm = 0.0;         // clip each gradient by its own L2 norm
  double global_clipnorm = 0.0;  // clip all gradients by their joint L2 norm
  bool skip_nonfinite = false;   // skip the whole step if any gradient holds NaN/Inf
};

namespace detail {
inline std::string fmt(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}
inline std::string need(const char* name, const char* what, double got) {
  return std::string(name) + " must be " + what + ", got " + fmt(got);
}
}  // namespace detail

// Each check returns "" when the value is valid, else a message naming the argument.
inline std::string check_lr(double lr) {
  return (std::isfinite(lr) && lr >= 0.0) ? "" : detail::need("lr", "a finite number >= 0", lr);
}
inline std::string check_weight_decay(double wd) {
  return (std::isfinite(wd) && wd >= 0.0) ? "" : detail::need("weight_decay", "a finite number >= 0", wd);
}
inline std::string check_gradient_options(const GradientOptions& o) {
  if (!(std::isfinite(o.clipnorm) && o.clipnorm >= 0.0))
    return detail::need("clipnorm", "a finite number > 0 (or None)", o.clipnorm);
  if (!(std::isfinite(o.global_clipnorm) && o.global_clipnorm >= 0.0))
    return detail::need("global_clipnorm", "a finite number > 0 (or None)", o.global_clipnorm);
  if (o.clipnorm > 0.0 && o.global_clipnorm > 0.0)
    return "clipnorm and global_clipnorm are mutually exclusive: set at most one";
  return "";
}
inline std::string check(const GradientDescentHyper& h) { return check_lr(h.lr); }
inline std::string check(const MomentumHyper& h) {
  std::string e = check_lr(h.lr);
  if (!e.empty()) return e;
  if (!(std::isfinite(h.momentum) && h.momentum >= 0.0 && h.momentum <= 1.0))
    return detail::need("momentum", "in [0, 1]", h.momentum);
  return "";
}
inline std::string check(const AdamHyper& h) {
  std::string e = check_lr(h.lr);
  if (!e.empty()) return e;
  if (!(std::isfinite(h.beta_1) && h.beta_1 >= 0.0 && h.beta_1 < 1.0))
    return detail::need("beta_1", "in [0, 1)", h.beta_1);
  if (!(std::isfinite(h.beta_2) && h.beta_2 >= 0.0 && h.beta_2 < 1.0))
    return detail::need("beta_2", "in [0, 1)", h.beta_2);
  if (!(std::isfinite(h.epsilon) && h.epsilon > 0.0))
    return detail::need("epsilon", "a finite number > 0", h.epsilon);
  if (h.step < 1) return detail::need("step", "an integer >= 1", double(h.step));
  return "";
}

// Per-tensor scalars of one step, in double; `decay` = lr*weight_decay, `grad_scale` is
// the clipping factor (1 when not clipped).
struct GradientDescentScalars {
  double lr, decay, grad_scale;
};
struct MomentumScalars {
  double lr, momentum, decay, grad_scale;
};
struct AdamScalars {
  double alpha, one_minus_beta_1, one_minus_beta_2, epsilon, decay, grad_scale;
};

inline GradientDescentScalars scalars(const GradientDescentHyper& h, double weight_decay, double grad_scale) {
  return {h.lr, h.lr * weight_decay, grad_scale};
}
inline MomentumScalars scalars(const MomentumHyper& h, double weight_decay, double grad_scale) {
  return {h.lr, h.momentum, h.lr * weight_decay, grad_scale};
}
// alpha = lr * sqrt(1 - b2^t) / (1 - b1^t): the same for every tensor of a step, so the
// updates compute it once (two pow calls cost more than updating a small tensor).
inline double adam_alpha(const AdamHyper& h) {
  const double t = double(h.step);
  return h.lr * std::sqrt(1.0 - std::pow(h.beta_2, t)) / (1.0 - std::pow(h.beta_1, t));
}
inline AdamScalars scalars(const AdamHyper& h, double alpha, double weight_decay, double grad_scale) {
  return {alpha, 1.0 - h.beta_1, 1.0 - h.beta_2, h.epsilon, h.lr * weight_decay, grad_scale};
}

// Clip factor c / max(norm, c): 1 below the threshold, NaN when the norm is NaN (as Keras).
inline double clip_factor(double sum_of_squares, double clip) {
  if (!(clip > 0.0)) return 1.0;
  const double norm = std::sqrt(sum_of_squares);
  if (std::isnan(norm)) return norm;
  return clip / (norm > clip ? norm : clip);
}

}  // namespace pyopt
