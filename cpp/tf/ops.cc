// Op definitions of the pyopt TensorFlow library: names, inputs, attrs, shape functions, docs,
// generated from the rule traits (cpp/include/pyopt/rules.h). The OpKernels are in op_kernels.cc;
// the maths in cpp/include/pyopt (one core for every front end).
//
// Each rule <Rule> has a single-tensor op and a multi-tensor op that updates N variables at once,
// Pyopt>Apply<Rule>[Multi], with inputs: var, the rule's slots (an optional slot <s>: M_<s> * resource,
// M_<s> = 0 or N), grad, lr (any float dtype), the rule's other hyperparameters (float64; int64 for
// an integer one such as Adam's step), weight_decay, clipnorm (and global_clipnorm for the multi
// ops); the rule's flags are bool attrs. Today:
//   Pyopt>ApplyGradientDescent[Multi]   var                       lr
//   Pyopt>ApplyMomentum[Multi]          var, velocity             lr, momentum      (nesterov)
//   Pyopt>ApplyAdam[Multi]              var, m, v, vhat(0 or N)   lr, beta_1, beta_2, epsilon, step
// and so on for every rule of PYOPT_RULES.
// Variables are resource variables updated in place; there are no outputs.
//
// Row-sparse gradients (tf.IndexedSlices) have multi-tensor ops of their own,
//   Pyopt>SparseApplyGradientDescentMulti, Pyopt>SparseApplyMomentumMulti, Pyopt>SparseApplyAdamMulti,
// with the same inputs except that grad is replaced by values (N * T, [nnz_i] + var_i.shape[1:])
// and indices (N * Tindices, int32 or int64, [nnz_i]), and an attr lazy (see SparseDoc).
// Hyperparameters are float64 scalar inputs (TF float attrs are only 32-bit), lr may be any
// float dtype (Keras keeps it in a float32 variable).
#include <string>
#include <vector>

#include "common.h"
#include "pyopt/rules.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace pyopt_tf {
namespace {

using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

struct Arg {
  std::string name, doc;
};
struct OptionalSlot {
  std::string name, doc;
  std::string flag;                                  // what giving it means ("amsgrad")
  std::string count() const { return "M_" + name; }  // its attr: how many are given, 0 or N
};
struct Input {
  std::string name, type, doc;
};

// What the registration needs of a rule, read from its trait.
struct RuleSpec {
  std::string op;                            // "ApplyAdam"
  std::string summary, formula;              // doc text
  std::vector<Arg> slots;                    // resource inputs after var, one per variable
  std::vector<OptionalSlot> optional_slots;  // then M_<slot> resources each, 0 or N
  std::vector<Input> hyper;                  // scalar inputs after grad: lr (Tlr), then float64 or int64
  std::vector<Arg> flags;                    // bool attrs, default false
};

// A hyperparameter's doc with its range: "decay rate of the first moment m; in [0, 1)."
template <class H>
std::string ParamDoc(const pyopt::Param<H>& p) {
  return std::string(p.doc) + "; " + pyopt::range_text(p.range) + (p.optional ? ", or 0 for off." : ".");
}

template <class Rule>
RuleSpec Spec(const std::string& name) {
  RuleSpec r;
  r.op = "Apply" + name;
  r.summary = Rule::kSummary;
  r.formula = Rule::kFormula;
  for (const auto& s : Rule::kSlots) {
    if (s.optional())
      r.optional_slots.push_back({s.name, s.doc, s.given.name});
    else
      r.slots.push_back({s.name, s.doc});
  }
  for (const auto& p : Rule::kParams) {
    const bool lr = std::string(p.name) == "lr";  // Keras keeps lr in a float32 variable
    r.hyper.push_back({p.name,
                       lr                ? "Tlr"
                       : p.range.integer ? "int64"
                                         : "double",
                       ParamDoc(p) + (lr ? " A scalar of any float dtype." : "")});
  }
  for (const auto& f : Rule::kFlags) r.flags.push_back({f.name, f.doc});
  return r;
}

std::string Indexed(const std::string& name, int i, bool multi) {
  return multi ? name + "[" + std::to_string(i) + "]" : name;
}

// Shape function: every variable (from its handle data, when known) and every slot has the
// shape of its gradient (sparse: [rows] + values.shape[1:], indices 1-D of length nnz);
// hyperparameters are scalars; weight_decay is a scalar or [N].
OpShapeInferenceFn ShapeFn(const RuleSpec& rule, bool multi, bool sparse) {
  std::vector<std::string> lists{"var"};
  for (const Arg& s : rule.slots) lists.push_back(s.name);
  const std::vector<OptionalSlot> optional = rule.optional_slots;
  // The inputs after grad, in order; all scalars but weight_decay.
  std::vector<std::string> scalars;
  for (const Input& h : rule.hyper) scalars.push_back(h.name);
  scalars.push_back("weight_decay");
  scalars.push_back("clipnorm");
  if (multi) scalars.push_back("global_clipnorm");
  return [=](InferenceContext* c) -> absl::Status {
    int n = 1;
    if (multi) TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
    std::vector<int> m(optional.size(), 0);  // how many of each optional slot
    int optional_inputs = 0;
    for (size_t l = 0; l < optional.size(); ++l) {
      TF_RETURN_IF_ERROR(c->GetAttr(optional[l].count(), &m[l]));
      if (m[l] != 0 && m[l] != n)
        return Invalid(optional[l].name, " has ", m[l], " variables but var has ", n, "; pass one per variable (",
                       optional[l].flag, ") or none");
      optional_inputs += m[l];
    }
    DataType dtype;
    TF_RETURN_IF_ERROR(c->GetAttr("T", &dtype));
    // Inputs in order: the resource lists (n each), the optional ones (m each), grad (n) or values
    // and indices (n each), then the scalars.
    const int grad_start = int(lists.size()) * n + optional_inputs;
    const std::string grad_name = sparse ? "values" : "grad";
    // The shape every resource of variable i must have: grad's, or [rows] + values.shape[1:].
    std::vector<ShapeHandle> expected(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      ShapeHandle grad = c->input(grad_start + i);
      if (sparse) {
        ShapeHandle indices, rows_first;
        TF_RETURN_IF_ERROR(c->WithRank(c->input(grad_start + n + i), 1, &indices));
        TF_RETURN_IF_ERROR(c->WithRankAtLeast(grad, 1, &grad));
        shape_inference::DimensionHandle nnz;
        if (!c->Merge(c->Dim(indices, 0), c->Dim(grad, 0), &nnz).ok())
          return Invalid(Indexed("indices", i, multi), " has shape ", c->DebugString(indices), " but ",
                         Indexed("values", i, multi), " has shape ", c->DebugString(grad),
                         "; indices must have one entry per row of values");
        TF_RETURN_IF_ERROR(c->Subshape(grad, 1, &rows_first));
        TF_RETURN_IF_ERROR(c->Concatenate(c->Vector(c->UnknownDim()), rows_first, &grad));
      }
      expected[size_t(i)] = grad;
    }
    auto check_handle = [&](const std::string& name, int input, int i) -> absl::Status {
      const auto* data = c->input_handle_shapes_and_types(input);
      if (data == nullptr || data->empty()) return absl::OkStatus();
      const ShapeHandle grad = c->input(grad_start + i);
      ShapeHandle merged;
      if ((*data)[0].dtype != dtype)
        return Invalid(Indexed(name, i, multi), " has dtype ", DTypeName((*data)[0].dtype), " but ",
                       Indexed(grad_name, i, multi), " has dtype ", DTypeName(dtype));
      if (!c->Merge((*data)[0].shape, expected[size_t(i)], &merged).ok())
        return Invalid(Indexed(name, i, multi), " has shape ", c->DebugString((*data)[0].shape), " but ",
                       Indexed(grad_name, i, multi), " has shape ", c->DebugString(grad),
                       sparse ? "; values must have shape [nnz] + var.shape[1:]" : "");
      return absl::OkStatus();
    };
    for (int l = 0; l < int(lists.size()); ++l)
      for (int i = 0; i < n; ++i) TF_RETURN_IF_ERROR(check_handle(lists[size_t(l)], l * n + i, i));
    for (int l = 0, first = int(lists.size()) * n; l < int(optional.size()); first += m[size_t(l)], ++l)
      for (int i = 0; i < m[size_t(l)]; ++i) TF_RETURN_IF_ERROR(check_handle(optional[size_t(l)].name, first + i, i));
    for (int k = 0; k < int(scalars.size()); ++k) {
      const std::string& name = scalars[size_t(k)];
      const ShapeHandle shape = c->input(grad_start + (sparse ? 2 : 1) * n + k);
      if (!c->RankKnown(shape)) continue;
      const int rank = c->Rank(shape);
      if (name == "weight_decay") {
        const auto dim = rank == 1 ? c->Dim(shape, 0) : shape_inference::DimensionHandle();
        const bool ok = rank == 0 || (rank == 1 && (!c->ValueKnown(dim) || c->Value(dim) == n));
        if (!ok)
          return Invalid("weight_decay must be a scalar or have shape [", n, "] (one per variable), got shape ",
                         c->DebugString(shape));
      } else if (rank != 0) {
        return Invalid(name, " must be a scalar, got shape ", c->DebugString(shape));
      }
    }
    return absl::OkStatus();
  };
}

// What the sparse ops add to the doc of their rule.
const char* const kSparseDoc =
    "Row-sparse gradients (tf.IndexedSlices): values[i] holds rows indices[i] of the gradient of var[i]; rows "
    "listed more than once are summed first. With lazy=false the step equals the dense step with the densified "
    "gradient (rows without a gradient get g = 0: their slots decay and weight decay applies to every row, as in "
    "Keras). With lazy=true only the rows present (and their slots) are updated (lazy Adam). Clipping uses the norm "
    "of the summed gradient. An index outside [0, rows) is an error and nothing is written.\n";

std::string Doc(const RuleSpec& rule, bool multi, bool sparse, const std::vector<Arg>& args) {
  std::string doc = rule.summary + (multi ? " Multi-tensor form: N variables in one op call." : "") + "\n\n" +
                    (sparse ? kSparseDoc : "") + rule.formula +
                    "\nThe gradient is first clipped: g *= c / max(||g||, c) with c = clipnorm (its own norm)" +
                    (multi ? " or c = global_clipnorm (the norm over all N gradients)" : "") +
                    "; 0 turns clipping off. Variables are updated in place under their locks, with copy-on-write: "
                    "a tensor read from a variable before the op keeps its value. All inputs are checked before "
                    "anything is written; errors name the offending input.\n";
  for (const Arg& a : args) doc += a.name + ": " + a.doc + "\n";
  return doc;
}

void Register(const RuleSpec& rule, bool multi, bool sparse = false) {
  const std::string name = "Pyopt>" + std::string(sparse ? "Sparse" : "") + rule.op + (multi ? "Multi" : "");
  register_op::OpDefBuilderWrapper b(name.c_str());
  const std::string each = multi ? "N * resource" : "resource";
  std::vector<Arg> docs;
  auto input = [&](const std::string& arg, const std::string& type, const std::string& doc) {
    b.Input(arg + ": " + type);
    docs.push_back({arg, doc});
  };
  input("var", each, "the variable(s) to update (resource, dtype T).");
  for (const Arg& s : rule.slots) input(s.name, each, s.doc);
  for (const OptionalSlot& s : rule.optional_slots) input(s.name, s.count() + " * resource", s.doc);
  if (sparse) {
    input("values", "N * T", "gradient rows, values[i] of shape [nnz_i] + var[i].shape[1:].");
    input("indices", "N * Tindices", "row numbers, indices[i] of shape [nnz_i], each in [0, var[i].shape[0]).");
  } else {
    input("grad", multi ? "N * T" : "T", "dense gradient(s), shaped like the variable(s).");
  }
  for (const Input& h : rule.hyper) input(h.name, h.type, h.doc);
  input(pyopt::kWeightDecay.name, "double", ParamDoc(pyopt::kWeightDecay) + " A scalar or one per variable.");
  input(pyopt::kClipnorm.name, "double", ParamDoc(pyopt::kClipnorm));
  if (multi) input(pyopt::kGlobalClipnorm.name, "double", ParamDoc(pyopt::kGlobalClipnorm));

  b.Attr("T: {half, bfloat16, float, double}");
  b.Attr("Tlr: {half, bfloat16, float, double} = DT_FLOAT");
  if (multi) b.Attr("N: int >= 1");
  if (sparse) {
    b.Attr("Tindices: {int32, int64}");
    b.Attr("lazy: bool = false");
    docs.push_back({"lazy", "update only the rows present (lazy Adam); false: the dense-equivalent step."});
  }
  for (const OptionalSlot& s : rule.optional_slots) b.Attr(s.count() + ": int >= 0");
  for (const Arg& f : rule.flags) {
    b.Attr(f.name + ": bool = false");
    docs.push_back(f);
  }
  b.Attr("skip_nonfinite: bool = false");
  docs.push_back({"skip_nonfinite", "if any gradient holds NaN or Inf, skip the whole step (write nothing)."});
  b.Attr("use_locking: bool = true");
  docs.push_back(
      {"use_locking", sparse ? "as in TF's ResourceSparseApply* ops: true locks the variables in address order while "
                               "updated; false takes the locks shared, so concurrent sparse steps may interleave "
                               "(Hogwild), as may a concurrent read."
                             : "as in TF's ResourceApply* ops: the variables are locked in address order while "
                               "updated; a dense update of resource variables takes the locks either way."});
  b.SetShapeFn(ShapeFn(rule, multi, sparse));
  b.Doc(Doc(rule, multi, sparse, docs));
  b();
}

// The three ops of every rule; the op names are the traits' names.
[[maybe_unused]] const bool kRegistered = [] {
#define PYOPT_REGISTER_OPS(Rule)             \
  Register(Spec<pyopt::Rule>(#Rule), false); \
  Register(Spec<pyopt::Rule>(#Rule), true);  \
  Register(Spec<pyopt::Rule>(#Rule), true, /*sparse=*/true);
  PYOPT_RULES(PYOPT_REGISTER_OPS)
#undef PYOPT_REGISTER_OPS
  return true;
}();

}  // namespace
}  // namespace pyopt_tf
}  // namespace tensorflow
