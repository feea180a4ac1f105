// CPU OpKernels of the pyopt ops (defined in ops.cc). An OpKernel only checks and unwraps its
// inputs: it looks up the resource variables, locks them in address order, applies TF's
// copy-on-write rule, and hands raw pointers to the core (cpp/include/pyopt/apply.h and
// sparse.h), which runs on TF's intra-op thread pool. All checks happen before anything is
// written.
//
// One OpKernel class (StepOp) serves every op: the rule's trait (cpp/include/pyopt/rules/) says
// which slots, hyperparameters and flags it has, the gradient kind (DenseGrads for
// Pyopt>Apply*[Multi], SparseGrads for Pyopt>SparseApply*Multi) how gradients are read,
// checked against the variables, locked for, and handed to the core.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "pyopt/apply.h"
#include "pyopt/rules.h"
#include "pyopt/sparse.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
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

// An int64 scalar input (an integer hyperparameter: step).
absl::Status ReadInteger(OpKernelContext* ctx, const char* name, std::int64_t* out) {
  const Tensor* t;
  TF_RETURN_IF_ERROR(ctx->input(name, &t));
  if (!TensorShapeUtils::IsScalar(t->shape()))
    return Invalid(name, " must be a scalar, got shape ", t->shape().DebugString());
  *out = t->scalar<std::int64_t>()();
  return absl::OkStatus();
}

// "m[3]" in a multi-tensor op, "m" in a single-tensor one.
std::string Name(const std::string& list, size_t i, bool multi) {
  return multi ? list + "[" + std::to_string(i) + "]" : list;
}

// A rule's hyperparameters from the op: its flags from the attrs, the flag of each optional
// slot from whether it was given, the values from the scalar inputs (in the trait's table order).
template <class Rule>
class RuleInputs {
 public:
  using Hyper = typename Rule::Hyper;
  explicit RuleInputs(OpKernelConstruction* c) {
    for (const auto& f : Rule::kFlags) {
      bool on = false;
      OP_REQUIRES_OK(c, c->GetAttr(f.name, &on));
      attrs_.*f.field = on;
    }
  }
  // given[k]: whether slot k (Rule::kSlots) was given.
  absl::Status Read(OpKernelContext* ctx, const std::vector<char>& given, Hyper* h) const {
    *h = attrs_;
    for (size_t k = 0; k < Rule::kSlots.size(); ++k)
      if (Rule::kSlots[k].optional()) h->*Rule::kSlots[k].given.field = given[k] != 0;
    for (const auto& p : Rule::kParams) {
      if (p.range.integer) {
        std::int64_t x;
        TF_RETURN_IF_ERROR(ReadInteger(ctx, p.name, &x));
        h->*p.field = double(x);
      } else {
        TF_RETURN_IF_ERROR(ReadScalar(ctx, p.name, &(h->*p.field)));
      }
    }
    return absl::OkStatus();
  }

 private:
  Hyper attrs_{};
};

// Runs the core's chunks on TF's intra-op pool (sized by tf.config.threading): one helper
// task per pool thread but one, each taking chunks from a SharedLoop, and the op's own
// thread taking chunks too (so as many threads work as the pool has, and a thread that the
// OS deschedules delays one chunk, not a fixed share as with Shard's static blocks). TF's
// threads flush denormals to zero (FTZ/DAZ); the core is written for IEEE arithmetic (its
// float16 conversions build subnormals from float denormals), so every chunk runs with
// denormals kept, and the op gives bitwise the results of pyopt.kernels.
pyopt::Executor PoolExecutor(OpKernelContext* ctx) {
  const auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  return [workers](std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& fn) {
    const std::function<void(std::int64_t, std::int64_t)> body = [&fn](std::int64_t begin, std::int64_t end) {
      tsl::port::ScopedDontFlushDenormal denormals;
      fn(begin, end);
    };
    const std::int64_t helpers = std::min<std::int64_t>(workers->num_threads, n) - 1;
    if (helpers <= 0) {
      body(0, n);
      return;
    }
    auto loop = std::make_shared<pyopt::SharedLoop>(n, body);
    for (std::int64_t h = 0; h < helpers; ++h) workers->workers->Schedule([loop] { loop->drain(); });
    loop->run_and_wait();
  };
}

// What the core needs of one step besides the tensors.
template <class Rule>
struct StepOptions {
  typename Rule::Hyper hyper;
  pyopt::GradientOptions options;
  std::vector<double> weight_decay;  // one per variable
};

// Sets param and slots of each core tensor from data[list][i] (list 0: var, then the slots).
template <class Tensors, class CoreT>
void SetPointers(const std::vector<std::vector<CoreT*>>& data, const std::vector<double>& weight_decay,
                 Tensors* tensors) {
  for (size_t i = 0; i < tensors->size(); ++i) {
    auto& t = (*tensors)[i];
    t.param = data[0][i];
    for (size_t l = 1; l < data.size(); ++l) t.slots[l - 1] = i < data[l].size() ? data[l][i] : nullptr;
    t.weight_decay = weight_decay[i];
  }
}

// Dense gradients: grad[i] has the shape of var[i] and of its slots.
template <class T>
struct DenseGrads {
  using CoreT = typename CoreType<T>::type;
  struct Attrs {
    explicit Attrs(OpKernelConstruction*) {}
  };
  static constexpr bool kSparse = false;  // locking and copy-on-write of dense updates
  static constexpr const char* kName = "grad";

  OpInputList grad;

  absl::Status Read(OpKernelContext* ctx, bool) { return ctx->input_list("grad", &grad); }
  int size() const { return grad.size(); }

  // list[i] (var[i] or one of its slots) against grad[i].
  absl::Status Check(size_t i, bool multi, bool, const std::string& list, const TensorShape& shape,
                     const TensorShape&) const {
    if (shape == grad[int(i)].shape()) return absl::OkStatus();
    return Invalid(Name(list, i, multi), " has shape ", shape.DebugString(), " but ", Name(kName, i, multi),
                   " has shape ", grad[int(i)].shape().DebugString());
  }

  template <class Rule>
  void Run(const std::vector<std::vector<CoreT*>>& data, const StepOptions<Rule>& step, const Attrs&,
           const pyopt::Executor& exec) const {
    std::vector<pyopt::TensorSlots<CoreT>> tensors(data[0].size());
    SetPointers(data, step.weight_decay, &tensors);
    for (size_t i = 0; i < tensors.size(); ++i) {
      tensors[i].size = grad[int(i)].NumElements();
      tensors[i].grad = reinterpret_cast<const CoreT*>(grad[int(i)].flat<T>().data());
    }
    pyopt::apply<Rule>(tensors, step.hyper, step.options, exec);
  }
};

// Row-sparse gradients (tf.IndexedSlices): values[i] holds rows indices[i] of var[i];
// values[i].shape == [nnz] + var[i].shape[1:], indices[i] is 1-D of length nnz.
template <class T, class Index>
struct SparseGrads {
  using CoreT = typename CoreType<T>::type;
  struct Attrs {
    explicit Attrs(OpKernelConstruction* c) { OP_REQUIRES_OK(c, c->GetAttr("lazy", &lazy)); }
    bool lazy = false;
  };
  // As TF's sparse training ops: the variables are put in copy-on-read mode (readers copy,
  // so rows are updated in place without copying the variable), and use_locking=false takes
  // the locks shared (concurrent sparse steps may interleave, as in TF).
  static constexpr bool kSparse = true;
  static constexpr const char* kName = "values";

  OpInputList values, indices_in;
  std::vector<std::vector<std::int64_t>> indices;  // as int64, for the core
  std::vector<std::int64_t> rows;                  // var[i].shape[0], set by Check

  // The checks that need no variable: ranks and lengths.
  absl::Status Read(OpKernelContext* ctx, bool multi) {
    TF_RETURN_IF_ERROR(ctx->input_list("values", &values));
    TF_RETURN_IF_ERROR(ctx->input_list("indices", &indices_in));
    indices.resize(size_t(values.size()));
    rows.resize(size_t(values.size()));
    for (int i = 0; i < values.size(); ++i) {
      const Tensor& v = values[i];
      const Tensor& idx = indices_in[i];
      if (v.dims() < 1)
        return Invalid(Name("values", size_t(i), multi), " must have rank >= 1 (rows first), got shape ",
                       v.shape().DebugString());
      if (idx.dims() != 1 || idx.dim_size(0) != v.dim_size(0))
        return Invalid(Name("indices", size_t(i), multi), " must be 1-D with one entry per row of ",
                       Name("values", size_t(i), multi), " (", v.dim_size(0), "), got shape ",
                       idx.shape().DebugString());
      const auto flat = idx.flat<Index>();
      indices[size_t(i)].assign(flat.data(), flat.data() + flat.size());
    }
    return absl::OkStatus();
  }
  int size() const { return values.size(); }

  // var[i]: rank >= 1, values[i] shaped [nnz] + var.shape[1:], indices in range.
  // A slot (list[i]): the shape of var[i].
  absl::Status Check(size_t i, bool multi, bool is_var, const std::string& list, const TensorShape& shape,
                     const TensorShape& var_shape) {
    if (!is_var) {
      if (shape == var_shape) return absl::OkStatus();
      return Invalid(Name(list, i, multi), " has shape ", shape.DebugString(), " but ", Name("var", i, multi),
                     " has shape ", var_shape.DebugString());
    }
    const Tensor& v = values[int(i)];
    if (shape.dims() < 1)
      return Invalid(Name(list, i, multi), " must have rank >= 1 (rows first) for a sparse gradient, got shape ",
                     shape.DebugString());
    TensorShape want = shape;
    want.set_dim(0, v.dim_size(0));
    if (v.shape() != want)
      return Invalid(Name(kName, i, multi), " has shape ", v.shape().DebugString(), " but ", Name(list, i, multi),
                     " has shape ", shape.DebugString(),
                     "; values must have shape [nnz] + var.shape[1:] = ", want.DebugString());
    // "indices[k] = 7 is out of range [0, 5)" -> "indices[i][k] = 7 is out of range [0, 5) (the rows of var[i])"
    std::string e = pyopt::check_indices(indices[i].data(), std::int64_t(indices[i].size()), shape.dim_size(0));
    if (!e.empty())
      return Invalid(e.replace(0, 7, Name("indices", i, multi)), " (the rows of ", Name(list, i, multi), ")");
    rows[i] = shape.dim_size(0);
    return absl::OkStatus();
  }

  template <class Rule>
  void Run(const std::vector<std::vector<CoreT*>>& data, const StepOptions<Rule>& step, const Attrs& attrs,
           const pyopt::Executor& exec) const {
    std::vector<pyopt::SparseTensorSlots<CoreT>> tensors(data[0].size());
    SetPointers(data, step.weight_decay, &tensors);
    for (size_t i = 0; i < tensors.size(); ++i) {
      auto& t = tensors[i];
      const Tensor& v = values[int(i)];
      t.values = reinterpret_cast<const CoreT*>(v.flat<T>().data());
      t.indices = indices[i].data();
      t.nnz = std::int64_t(indices[i].size());
      t.rows = rows[i];
      t.row_size = 1;
      for (int d = 1; d < v.dims(); ++d) t.row_size *= v.dim_size(d);
    }
    pyopt::apply_sparse<Rule>(tensors, step.hyper, attrs.lazy, step.options, exec);
  }
};

// The mutexes of distinct variables, held in address order (so concurrent steps on
// overlapping variables cannot deadlock) until destruction. TF's
// MaybeLockVariableInputMutexesInOrder does the same but looks every variable up again and
// finds duplicates by a quadratic scan; these locks reuse Compute's one lookup per variable.
class VariableLocks {
 public:
  VariableLocks(const std::vector<core::RefCountPtr<Var>>& vars, const std::vector<size_t>& address_order,
                bool exclusive) {
    if (exclusive) {
      exclusive_.reserve(address_order.size());
      for (size_t k : address_order) exclusive_.emplace_back(*vars[k]->mu());
    } else {
      shared_.reserve(address_order.size());
      for (size_t k : address_order) shared_.emplace_back(*vars[k]->mu());
    }
  }

 private:
  std::vector<tsl::mutex_lock> exclusive_;
  std::vector<tsl::tf_shared_lock> shared_;
};

// The kernel of every op: Rule (the update) x Grads (dense or row-sparse gradients).
template <class T, class Rule, class Grads>
class StepOp : public OpKernel {
 public:
  using CoreT = typename CoreType<T>::type;

  explicit StepOp(OpKernelConstruction* c) : OpKernel(c), rule_(c), attrs_(c) {
    OP_REQUIRES_OK(c, c->GetAttr("skip_nonfinite", &skip_nonfinite_));
    OP_REQUIRES_OK(c, c->GetAttr("use_locking", &use_locking_));
    multi_ = c->HasAttr("N");
    lists_.push_back("var");
    optional_.push_back(false);
    for (const auto& s : Rule::kSlots) {
      lists_.push_back(s.name);
      optional_.push_back(s.optional());
    }
  }

  void Compute(OpKernelContext* ctx) override {
    // IEEE arithmetic from here on: the range checks too (with TF's denormal flushing a
    // subnormal beta_1 or epsilon would compare as 0 and be refused), see PoolExecutor.
    tsl::port::ScopedDontFlushDenormal denormals;
    Grads grads;
    OP_REQUIRES_OK(ctx, grads.Read(ctx, multi_));
    const int n = grads.size();

    // The variable inputs: vars[l][i] is the flat input index of variable i of list l.
    std::vector<std::vector<int>> vars(lists_.size());
    size_t total = 0;
    std::vector<char> given(Rule::kSlots.size(), 1);  // per slot: given (an optional one: 0 or n variables)
    for (size_t l = 0; l < lists_.size(); ++l) {
      int start, stop;
      OP_REQUIRES_OK(ctx, InputRange(lists_[l], &start, &stop));
      OP_REQUIRES(ctx, stop - start == n || (optional_[l] && stop == start),
                  Invalid(lists_[l], " has ", stop - start, " variables but ", Grads::kName, " has ", n));
      vars[l].reserve(size_t(stop - start));
      for (int i = start; i < stop; ++i) vars[l].push_back(i);
      total += vars[l].size();
      if (l > 0) given[l - 1] = stop > start;
    }
    StepOptions<Rule> step;
    OP_REQUIRES_OK(ctx, ReadOptions(ctx, n, given, &step));

    // Look up every variable (once: the locks below reuse these lookups).
    std::vector<core::RefCountPtr<Var>> handles;
    std::vector<size_t> list_of, index_of;
    handles.reserve(total);
    list_of.reserve(total);
    index_of.reserve(total);
    for (size_t l = 0; l < lists_.size(); ++l)
      for (size_t i = 0; i < vars[l].size(); ++i) {
        core::RefCountPtr<Var> var;
        const absl::Status s = LookupResource(ctx, HandleFromInput(ctx, vars[l][i]), &var);
        OP_REQUIRES(ctx, s.ok(),
                    Invalid(Name(lists_[l], i, multi_), " is not an initialised resource variable: ", s.message()));
        handles.push_back(std::move(var));
        list_of.push_back(l);
        index_of.push_back(i);
      }
    const auto name = [&](size_t k) { return Name(lists_[list_of[k]], index_of[k], multi_); };

    // Refuse the same variable twice (the core's arrays must not overlap); the address order
    // found here is also the lock order.
    std::vector<size_t> order(handles.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return handles[a].get() < handles[b].get() || (handles[a].get() == handles[b].get() && a < b);
    });
    for (size_t k = 1; k < order.size(); ++k)
      OP_REQUIRES(
          ctx, handles[order[k - 1]].get() != handles[order[k]].get(),
          Invalid(name(order[k - 1]), " and ", name(order[k]), " are the same variable; each must be separate"));

    // Lock all of them in address order, then check their state. As TF's own ResourceApply*
    // ops do, dense updates lock exclusively whatever use_locking says (the copy-on-write
    // below must not race with readers); sparse ones follow TF's ResourceSparseApply* ops
    // (see SparseGrads).
    if (Grads::kSparse)  // (an uninitialised variable has no tensor to copy: refused below)
      for (auto& var : handles)
        if (var->is_initialized) EnsureSparseVariableAccess<CPUDevice, T>(ctx, var.get()).IgnoreError();
    VariableLocks locks(handles, order, /*exclusive=*/!Grads::kSparse || use_locking_);
    const DataType dtype = DataTypeToEnum<T>::v();
    for (size_t k = 0; k < handles.size(); ++k) {
      Var* var = handles[k].get();
      const size_t i = index_of[k];
      OP_REQUIRES(ctx, var->is_initialized, Invalid(name(k), " is uninitialised"));
      OP_REQUIRES(ctx, var->tensor()->dtype() == dtype,
                  Invalid(name(k), " has dtype ", DTypeName(var->tensor()->dtype()), " but ",
                          Name(Grads::kName, i, multi_), " has dtype ", DTypeName(dtype)));
    }
    for (size_t k = 0; k < handles.size(); ++k)  // handles[i] is var[i]: list 0 comes first
      OP_REQUIRES_OK(ctx, grads.Check(index_of[k], multi_, list_of[k] == 0, lists_[list_of[k]],
                                      handles[k]->tensor()->shape(), handles[index_of[k]]->tensor()->shape()));

    // Copy-on-write (dense): a variable whose buffer is shared with an earlier read gets a
    // fresh copy. Sparse: the variables are in copy-on-read mode; rows are updated in place.
    if (!Grads::kSparse)
      for (auto& var : handles)
        OP_REQUIRES_OK(ctx, PrepareToUpdateVariable<CPUDevice, T>(ctx, var->tensor(), var->copy_on_read_mode.load()));

    std::vector<std::vector<CoreT*>> data(lists_.size());
    for (size_t l = 0; l < lists_.size(); ++l) data[l].reserve(vars[l].size());
    for (size_t k = 0; k < handles.size(); ++k)
      data[list_of[k]].push_back(reinterpret_cast<CoreT*>(handles[k]->tensor()->flat<T>().data()));
    grads.template Run<Rule>(data, step, attrs_, PoolExecutor(ctx));
  }

 private:
  // Hyperparameters (checked by the core's rules), clipping options and weight decay.
  absl::Status ReadOptions(OpKernelContext* ctx, int n, const std::vector<char>& given, StepOptions<Rule>* step) const {
    TF_RETURN_IF_ERROR(rule_.Read(ctx, given, &step->hyper));
    if (const std::string e = pyopt::check<Rule>(step->hyper); !e.empty()) return Invalid(e);
    step->options.skip_nonfinite = skip_nonfinite_;
    TF_RETURN_IF_ERROR(ReadScalar(ctx, "clipnorm", &step->options.clipnorm));
    if (multi_) TF_RETURN_IF_ERROR(ReadScalar(ctx, "global_clipnorm", &step->options.global_clipnorm));
    if (const std::string e = pyopt::check_gradient_options(step->options); !e.empty()) return Invalid(e);
    return ReadWeightDecay(ctx, n, &step->weight_decay);
  }

  // weight_decay: a float64 scalar (same for all) or one value per variable.
  static absl::Status ReadWeightDecay(OpKernelContext* ctx, int n, std::vector<double>* out) {
    const Tensor* t;
    TF_RETURN_IF_ERROR(ctx->input("weight_decay", &t));
    if (TensorShapeUtils::IsScalar(t->shape())) {
      out->assign(size_t(n), t->scalar<double>()());
    } else if (t->dims() == 1 && t->dim_size(0) == n) {
      const auto flat = t->flat<double>();
      out->assign(flat.data(), flat.data() + n);
    } else {
      return Invalid("weight_decay must be a scalar or have shape [", n, "] (one per variable), got shape ",
                     t->shape().DebugString());
    }
    for (size_t i = 0; i < out->size(); ++i) {
      std::string e = pyopt::check_weight_decay((*out)[i]);  // "weight_decay must be ..."
      if (e.empty()) continue;
      if (t->dims() == 1) e.replace(0, std::string("weight_decay").size(), "weight_decay[" + std::to_string(i) + "]");
      return Invalid(e);
    }
    return absl::OkStatus();
  }

  RuleInputs<Rule> rule_;
  typename Grads::Attrs attrs_;
  std::vector<std::string> lists_;  // resource inputs: var, then the rule's slots
  std::vector<char> optional_;      // per list: an optional slot (0 or n variables)
  bool multi_ = false;
  bool skip_nonfinite_ = false;
  bool use_locking_ = true;
};

// The kernels of one rule's ops (named after its trait) for one dtype.
#define PYOPT_REGISTER_RULE_FOR(Rule, T)                                                               \
  REGISTER_KERNEL_BUILDER(Name("Pyopt>Apply" #Rule).Device(DEVICE_CPU).TypeConstraint<T>("T"),         \
                          StepOp<T, pyopt::Rule, DenseGrads<T>>);                                      \
  REGISTER_KERNEL_BUILDER(Name("Pyopt>Apply" #Rule "Multi").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          StepOp<T, pyopt::Rule, DenseGrads<T>>);                                      \
  REGISTER_KERNEL_BUILDER(Name("Pyopt>SparseApply" #Rule "Multi")                                      \
                              .Device(DEVICE_CPU)                                                      \
                              .TypeConstraint<T>("T")                                                  \
                              .TypeConstraint<std::int32_t>("Tindices"),                               \
                          StepOp<T, pyopt::Rule, SparseGrads<T, std::int32_t>>);                       \
  REGISTER_KERNEL_BUILDER(Name("Pyopt>SparseApply" #Rule "Multi")                                      \
                              .Device(DEVICE_CPU)                                                      \
                              .TypeConstraint<T>("T")                                                  \
                              .TypeConstraint<std::int64_t>("Tindices"),                               \
                          StepOp<T, pyopt::Rule, SparseGrads<T, std::int64_t>>);

// Every rule of the list, for every dtype.
#define PYOPT_REGISTER_RULE(Rule)                \
  PYOPT_REGISTER_RULE_FOR(Rule, Eigen::half)     \
  PYOPT_REGISTER_RULE_FOR(Rule, Eigen::bfloat16) \
  PYOPT_REGISTER_RULE_FOR(Rule, float)           \
  PYOPT_REGISTER_RULE_FOR(Rule, double)

PYOPT_RULES(PYOPT_REGISTER_RULE)

}  // namespace
}  // namespace pyopt_tf
}  // namespace tensorflow
