// CPU kernels of the pyopt ops (defined in ops.cc). A kernel only checks and unwraps its
// inputs: it looks up the resource variables, locks them in address order, applies TF's
// copy-on-write rule, and hands raw pointers to the core (cpp/include/pyopt/apply.h), which
// runs on TF's intra-op thread pool. All checks happen before anything is written.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common.h"
#include "pyopt/apply.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/util/work_sharder.h"
#include "tsl/platform/denormal.h"

namespace tensorflow {
namespace pyopt_tf {
namespace {

using CPUDevice = Eigen::ThreadPoolDevice;

// The core's storage type for each TF dtype (layout-compatible: the pointers are reinterpreted).
template <class T>
struct CoreType {
  using type = T;
};
template <>
struct CoreType<Eigen::half> {
  using type = pyopt::half;
};
template <>
struct CoreType<Eigen::bfloat16> {
  using type = pyopt::bfloat16;
};
static_assert(sizeof(Eigen::half) == sizeof(pyopt::half) && sizeof(Eigen::bfloat16) == sizeof(pyopt::bfloat16),
              "16-bit types must be layout-compatible");

// A scalar input as double; `lr` may be any float dtype, the other hyperparameters are float64.
absl::Status ReadScalar(OpKernelContext* ctx, const char* name, double* out) {
  const Tensor* t;
  TF_RETURN_IF_ERROR(ctx->input(name, &t));
  if (!TensorShapeUtils::IsScalar(t->shape()))
    return Invalid(name, " must be a scalar, got shape ", t->shape().DebugString());
  switch (t->dtype()) {
    case DT_DOUBLE: *out = t->scalar<double>()(); break;
    case DT_FLOAT: *out = t->scalar<float>()(); break;
    case DT_HALF: *out = double(static_cast<float>(t->scalar<Eigen::half>()())); break;
    case DT_BFLOAT16: *out = double(static_cast<float>(t->scalar<Eigen::bfloat16>()())); break;
    default: return Invalid(name, " has unsupported dtype ", DTypeName(t->dtype()));
  }
  return absl::OkStatus();
}

absl::Status ReadStep(OpKernelContext* ctx, std::int64_t* out) {
  const Tensor* t;
  TF_RETURN_IF_ERROR(ctx->input("step", &t));
  if (!TensorShapeUtils::IsScalar(t->shape()))
    return Invalid("step must be a scalar, got shape ", t->shape().DebugString());
  *out = t->scalar<std::int64_t>()();
  return absl::OkStatus();
}

// The rules: their slot variables, their hyperparameters, and the core entry point.
struct GradientDescentRule {
  using Hyper = pyopt::GradientDescentHyper;
  static std::vector<std::string> Slots() { return {}; }
  explicit GradientDescentRule(OpKernelConstruction*) {}
  absl::Status Read(OpKernelContext*, double lr, bool, Hyper* h) const {
    h->lr = lr;
    return absl::OkStatus();
  }
  template <class T>
  static bool Apply(const std::vector<pyopt::TensorSlots<T>>& t, const Hyper& h, const pyopt::GradientOptions& o,
                    const pyopt::Executor& e) {
    return pyopt::apply_gradient_descent(t, h, o, e);
  }
};

struct MomentumRule {
  using Hyper = pyopt::MomentumHyper;
  static std::vector<std::string> Slots() { return {"velocity"}; }
  explicit MomentumRule(OpKernelConstruction* c) { OP_REQUIRES_OK(c, c->GetAttr("nesterov", &nesterov)); }
  absl::Status Read(OpKernelContext* ctx, double lr, bool, Hyper* h) const {
    h->lr = lr;
    h->nesterov = nesterov;
    return ReadScalar(ctx, "momentum", &h->momentum);
  }
  template <class T>
  static bool Apply(const std::vector<pyopt::TensorSlots<T>>& t, const Hyper& h, const pyopt::GradientOptions& o,
                    const pyopt::Executor& e) {
    return pyopt::apply_momentum(t, h, o, e);
  }
  bool nesterov = false;
};

struct AdamRule {
  using Hyper = pyopt::AdamHyper;
  static std::vector<std::string> Slots() { return {"m", "v", "vhat"}; }  // vhat: 0 or N variables
  explicit AdamRule(OpKernelConstruction*) {}
  absl::Status Read(OpKernelContext* ctx, double lr, bool amsgrad, Hyper* h) const {
    h->lr = lr;
    h->amsgrad = amsgrad;
    TF_RETURN_IF_ERROR(ReadScalar(ctx, "beta_1", &h->beta_1));
    TF_RETURN_IF_ERROR(ReadScalar(ctx, "beta_2", &h->beta_2));
    TF_RETURN_IF_ERROR(ReadScalar(ctx, "epsilon", &h->epsilon));
    return ReadStep(ctx, &h->step);
  }
  template <class T>
  static bool Apply(const std::vector<pyopt::TensorSlots<T>>& t, const Hyper& h, const pyopt::GradientOptions& o,
                    const pyopt::Executor& e) {
    return pyopt::apply_adam(t, h, o, e);
  }
};

// One kernel class for the single-tensor op (N = 1) and the multi-tensor op of a rule.
template <class T, class Rule>
class ApplyOp : public OpKernel {
 public:
  using CoreT = typename CoreType<T>::type;

  explicit ApplyOp(OpKernelConstruction* c) : OpKernel(c), rule_(c) {
    OP_REQUIRES_OK(c, c->GetAttr("skip_nonfinite", &skip_nonfinite_));
    OP_REQUIRES_OK(c, c->GetAttr("use_locking", &use_locking_));
    multi_ = c->HasAttr("N");
    lists_.push_back("var");
    for (const std::string& s : Rule::Slots()) lists_.push_back(s);
  }

  void Compute(OpKernelContext* ctx) override {
    OpInputList grads;
    OP_REQUIRES_OK(ctx, ctx->input_list("grad", &grads));
    const int n = grads.size();

    // The variable inputs: vars[l][i] is the flat input index of variable i of list l.
    std::vector<std::vector<int>> vars(lists_.size());
    for (size_t l = 0; l < lists_.size(); ++l) {
      int start, stop;
      OP_REQUIRES_OK(ctx, InputRange(lists_[l], &start, &stop));
      OP_REQUIRES(ctx, stop - start == n || (lists_[l] == "vhat" && stop == start),
                  Invalid(lists_[l], " has ", stop - start, " variables but grad has ", n));
      for (int i = start; i < stop; ++i) vars[l].push_back(i);
    }
    const bool has_vhat = lists_.back() == "vhat" && !vars.back().empty();

    // Hyperparameters, checked by the core's rules.
    double lr;
    OP_REQUIRES_OK(ctx, ReadScalar(ctx, "lr", &lr));
    typename Rule::Hyper hyper;
    OP_REQUIRES_OK(ctx, rule_.Read(ctx, lr, has_vhat, &hyper));
    OP_REQUIRES(ctx, pyopt::check(hyper).empty(), Invalid(pyopt::check(hyper)));
    pyopt::GradientOptions options;
    options.skip_nonfinite = skip_nonfinite_;
    OP_REQUIRES_OK(ctx, ReadScalar(ctx, "clipnorm", &options.clipnorm));
    if (multi_) OP_REQUIRES_OK(ctx, ReadScalar(ctx, "global_clipnorm", &options.global_clipnorm));
    OP_REQUIRES(ctx, pyopt::check_gradient_options(options).empty(),
                Invalid(pyopt::check_gradient_options(options)));
    std::vector<double> weight_decay;
    OP_REQUIRES_OK(ctx, ReadWeightDecay(ctx, n, &weight_decay));

    // Look up every variable; refuse the same variable twice (the core's arrays must not overlap).
    std::vector<core::RefCountPtr<Var>> handles;
    std::vector<int> inputs;
    std::vector<std::string> names;
    for (size_t l = 0; l < lists_.size(); ++l)
      for (size_t i = 0; i < vars[l].size(); ++i) {
        core::RefCountPtr<Var> var;
        const absl::Status s = LookupResource(ctx, HandleFromInput(ctx, vars[l][i]), &var);
        OP_REQUIRES(ctx, s.ok(),
                    Invalid(Name(lists_[l], i), " is not an initialised resource variable: ", s.message()));
        handles.push_back(std::move(var));
        inputs.push_back(vars[l][i]);
        names.push_back(Name(lists_[l], i));
      }
    std::vector<size_t> order(handles.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return handles[a].get() < handles[b].get() || (handles[a].get() == handles[b].get() && a < b);
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const size_t a = order[k - 1], b = order[k];
      OP_REQUIRES(ctx, handles[a].get() != handles[b].get(),
                  Invalid(names[a], " and ", names[b], " are the same variable; each must be separate"));
    }

    // Lock all of them in address order, then check their state. As in TF's own dense
    // ResourceApply* ops, resource variables are locked whatever use_locking says (the
    // copy-on-write below must not race with readers).
    auto locks = MaybeLockVariableInputMutexesInOrder<CPUDevice, T>(ctx, use_locking_, /*sparse=*/false, inputs);
    if (!ctx->status().ok()) return;
    const DataType dtype = DataTypeToEnum<T>::v();
    for (size_t k = 0; k < handles.size(); ++k) {
      Var* var = handles[k].get();
      const int i = int(k % size_t(n));
      const std::string grad_name = Name("grad", size_t(i));
      OP_REQUIRES(ctx, var->is_initialized, Invalid(names[k], " is uninitialised"));
      OP_REQUIRES(ctx, var->tensor()->dtype() == dtype,
                  Invalid(names[k], " has dtype ", DTypeName(var->tensor()->dtype()), " but ", grad_name,
                          " has dtype ", DTypeName(dtype)));
      OP_REQUIRES(ctx, var->tensor()->shape() == grads[i].shape(),
                  Invalid(names[k], " has shape ", var->tensor()->shape().DebugString(), " but ", grad_name,
                          " has shape ", grads[i].shape().DebugString()));
    }

    // Copy-on-write: a variable whose buffer is shared with an earlier read gets a fresh copy.
    for (auto& var : handles)
      OP_REQUIRES_OK(ctx, PrepareToUpdateVariable<CPUDevice, T>(ctx, var->tensor(), var->copy_on_read_mode.load()));

    std::vector<pyopt::TensorSlots<CoreT>> tensors(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      auto& t = tensors[size_t(i)];
      t.size = grads[i].NumElements();
      t.grad = reinterpret_cast<const CoreT*>(grads[i].flat<T>().data());
      t.weight_decay = weight_decay[size_t(i)];
    }
    for (size_t k = 0; k < handles.size(); ++k) {
      CoreT* data = reinterpret_cast<CoreT*>(handles[k]->tensor()->flat<T>().data());
      const size_t list = k / size_t(n), i = k % size_t(n);
      if (list == 0)
        tensors[i].param = data;
      else
        tensors[i].slots[list - 1] = data;
    }
    tsl::port::ScopedDontFlushDenormal denormals;  // see PoolExecutor
    Rule::Apply(tensors, hyper, options, PoolExecutor(ctx));
  }

 private:
  // "m[3]" in the multi-tensor op, "m" in the single-tensor one.
  std::string Name(const std::string& list, size_t i) const {
    return multi_ ? list + "[" + std::to_string(i) + "]" : list;
  }

  // weight_decay: a float64 scalar (same for all) or one value per variable.
  absl::Status ReadWeightDecay(OpKernelContext* ctx, int n, std::vector<double>* out) const {
    const Tensor* t;
    TF_RETURN_IF_ERROR(ctx->input("weight_decay", &t));
    if (TensorShapeUtils::IsScalar(t->shape())) {
      out->assign(size_t(n), t->scalar<double>()());
    } else if (t->dims() == 1 && t->dim_size(0) == n) {
      const auto flat = t->flat<double>();
      out->assign(flat.data(), flat.data() + n);
    } else {
      return Invalid("weight_decay must be a scalar or have shape [", n,
                     "] (one per variable), got shape ", t->shape().DebugString());
    }
    for (size_t i = 0; i < out->size(); ++i) {
      std::string e = pyopt::check_weight_decay((*out)[i]);  // "weight_decay must be ..."
      if (e.empty()) continue;
      if (t->dims() == 1) e.replace(0, std::string("weight_decay").size(), "weight_decay[" + std::to_string(i) + "]");
      return Invalid(e);
    }
    return absl::OkStatus();
  }

  // Runs the core's chunks on TF's intra-op pool (sized by tf.config.threading). TF's
  // threads flush denormals to zero (FTZ/DAZ); the core is written for IEEE arithmetic (its
  // float16 conversions build subnormals from float denormals), so every chunk runs with
  // denormals kept, and the op gives bitwise the results of pyopt.kernels.
  static pyopt::Executor PoolExecutor(OpKernelContext* ctx) {
    const auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    return [workers](std::int64_t n, std::int64_t cost, const std::function<void(std::int64_t, std::int64_t)>& fn) {
      Shard(workers->num_threads, workers->workers, n, cost, [&fn](std::int64_t begin, std::int64_t end) {
        tsl::port::ScopedDontFlushDenormal denormals;
        fn(begin, end);
      });
    };
  }

  Rule rule_;
  std::vector<std::string> lists_;  // resource inputs: var, then the rule's slots
  bool multi_ = false;
  bool skip_nonfinite_ = false;
  bool use_locking_ = true;
};

template <class T>
using GradientDescentOp = ApplyOp<T, GradientDescentRule>;
template <class T>
using MomentumOp = ApplyOp<T, MomentumRule>;
template <class T>
using AdamOp = ApplyOp<T, AdamRule>;

#define PYOPT_REGISTER_RULE(OP, KERNEL, T)                                                                 \
  REGISTER_KERNEL_BUILDER(Name("Pyopt>" OP).Device(DEVICE_CPU).TypeConstraint<T>("T"), KERNEL<T>);        \
  REGISTER_KERNEL_BUILDER(Name("Pyopt>" OP "Multi").Device(DEVICE_CPU).TypeConstraint<T>("T"), KERNEL<T>);

#define PYOPT_REGISTER_CPU(T)                                 \
  PYOPT_REGISTER_RULE("ApplyGradientDescent", GradientDescentOp, T) \
  PYOPT_REGISTER_RULE("ApplyMomentum", MomentumOp, T)               \
  PYOPT_REGISTER_RULE("ApplyAdam", AdamOp, T)

PYOPT_REGISTER_CPU(Eigen::half)
PYOPT_REGISTER_CPU(Eigen::bfloat16)
PYOPT_REGISTER_CPU(float)
PYOPT_REGISTER_CPU(double)

}  // namespace
}  // namespace pyopt_tf
}  // namespace tensorflow
