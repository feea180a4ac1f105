// pybind11 bindings `pyopt._core`: check the NumPy buffers, release the GIL, hand raw
// pointers to the core. All maths lives in cpp/include/pyopt.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "pyopt/apply.h"
#include "pyopt/probe.h"
#include "pyopt/rules.h"
#include "pyopt/sparse.h"

namespace py = pybind11;
using namespace pyopt;

namespace {

int default_threads() {
  if (const char* env = std::getenv("PYOPT_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool& pool() {
  static ThreadPool* p = new ThreadPool(default_threads());  // never destroyed: no join at interpreter exit
  return *p;
}

Executor pool_executor() {
  return [](std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& fn) { pool().parallel_for(n, fn); };
}

void require(const std::string& error) {
  if (!error.empty()) throw py::value_error(error);
}

std::string describe_shape(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    s += std::to_string(a.shape(i)) + (a.ndim() == 1 ? "," : i + 1 < a.ndim() ? ", " : "");
  return s + ")";
}

// "grads[3]": the name of array 3 of the list grads in messages.
std::string arg_name(const char* list, std::size_t index) {
  return std::string(list) + "[" + std::to_string(index) + "]";
}

// One array argument, e.g. grads[3]. The name is built only for a message: a step can
// have thousands of arrays, and the binding's work per array is part of every call.
struct Arg {
  py::array array;   // a reference, held while the GIL is released
  const char* list;  // a string literal: "params", "grads", ...
  std::size_t index;
  bool written;
  bool rows_of_param = false;  // sparse gradient values: shape (nnz,) + param.shape[1:]
  std::string name() const { return arg_name(list, index); }
};

// NumPy's type number of ml_dtypes.bfloat16 (-1 if ml_dtypes is not installed).
int bfloat16_type_number() {
  static const int num = [] {
    try {
      return py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")).num();
    } catch (const py::error_already_set&) {
      return -1;
    }
  }();
  return num;
}

// By type number, not dtype.name: NumPy computes the name in Python, for every array of a step.
DType dtype_of(const Arg& a) {
  const py::dtype dt = a.array.dtype();
  const char order = dt.byteorder();
  const std::uint16_t one = 1;
  const bool little_endian = *reinterpret_cast<const unsigned char*>(&one) == 1;
  if (order == (little_endian ? '>' : '<'))
    throw py::type_error(a.name() + " must be in native byte order (use .astype(arr.dtype.newbyteorder('=')))");
  const int num = dt.num();
  if (num == py::detail::npy_api::NPY_FLOAT_) return DType::float32;
  if (num == py::detail::npy_api::NPY_DOUBLE_) return DType::float64;
  if (num == 23 /* NPY_HALF */) return DType::float16;
  if (num == bfloat16_type_number()) return DType::bfloat16;
  throw py::type_error(a.name() + " has dtype " + std::string(py::str(dt)) +
                       "; supported: float16, bfloat16, float32, float64");
}

py::array as_array(const py::handle& obj, const char* list, std::size_t index) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(arg_name(list, index) + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(obj);
}

// Checks every array of the step before anything is written: dtypes agree, shapes agree
// with the parameter, C-contiguous, written arrays writeable, no written array overlapping
// any other. Returns the common dtype.
DType check_arrays(const std::vector<Arg>& args, std::size_t per_tensor) {
  if (args.empty()) return DType::float32;
  const DType dtype = dtype_of(args[0]);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const Arg& a = args[i];
    const Arg& param = args[i - i % per_tensor];
    if (const DType own = dtype_of(a); own != dtype)
      throw py::type_error(a.name() + " has dtype " + dtype_name(own) + " but " + args[0].name() + " has dtype " +
                           dtype_name(dtype) + "; all arrays of a step must share one dtype");
    if (&a != &param) {
      bool same = a.array.ndim() == param.array.ndim();
      for (py::ssize_t d = a.rows_of_param ? 1 : 0; same && d < a.array.ndim(); ++d)
        same = a.array.shape(d) == param.array.shape(d);
      if (!same)
        throw py::value_error(a.name() + " has shape " + describe_shape(a.array) + " but " + param.name() +
                              " has shape " + describe_shape(param.array) +
                              (a.rows_of_param ? " (expected (nnz,) + the parameter's row shape)" : ""));
    }
    if (!(a.array.flags() & py::array::c_style))
      throw py::value_error(a.name() + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (a.written && !a.array.writeable()) throw py::value_error(a.name() + " is read-only; it is updated in place");
  }
  // Overlap: sort byte ranges, compare neighbours that could intersect.
  struct Range {
    std::uintptr_t begin, end;
    std::size_t arg;
  };
  std::vector<Range> ranges;
  ranges.reserve(args.size());
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto begin = reinterpret_cast<std::uintptr_t>(args[i].array.data());
    if (args[i].array.nbytes() > 0) ranges.push_back({begin, begin + std::uintptr_t(args[i].array.nbytes()), i});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    for (std::size_t j = i + 1; j < ranges.size() && ranges[j].begin < ranges[i].end; ++j) {
      const Arg& a = args[ranges[i].arg];
      const Arg& b = args[ranges[j].arg];
      if (a.written || b.written)
        throw py::value_error(a.name() + " and " + b.name() +
                              " overlap in memory; every updated array must be separate");
    }
  }
  return dtype;
}

std::vector<py::handle> as_list(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
    throw py::type_error(std::string(name) + " must be a list of numpy arrays");
  std::vector<py::handle> out;
  out.reserve(py::len(obj));
  for (auto item : obj) out.push_back(item);
  return out;
}

// Collects lists of arrays (params first) into named args, one group per tensor.
std::vector<Arg> gather(const std::vector<std::pair<const char*, py::object>>& lists, std::vector<bool> written,
                        std::size_t rows_of_param_list = 0) {
  std::vector<std::vector<py::handle>> items;
  for (const auto& [name, obj] : lists) items.push_back(as_list(obj, name));
  const std::size_t n = items[0].size();
  for (std::size_t l = 1; l < items.size(); ++l)
    if (items[l].size() != n)
      throw py::value_error(std::string(lists[l].first) + " has " + std::to_string(items[l].size()) + " arrays but " +
                            lists[0].first + " has " + std::to_string(n));
  std::vector<Arg> args;
  args.reserve(n * items.size());
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t l = 0; l < items.size(); ++l) {
      const char* list = lists[l].first;
      const bool rows_of_param = rows_of_param_list != 0 && l == rows_of_param_list;
      args.push_back({as_array(items[l][t], list, t), list, t, written[l], rows_of_param});
    }
  return args;
}

double as_weight_decay(const py::handle& x) {
  try {
    if (!py::isinstance<py::bool_>(x)) return x.cast<double>();
  } catch (const py::cast_error&) {
  }
  throw py::type_error("weight_decay must be a float or a list of floats, got " +
                       std::string(py::str(py::type::of(x).attr("__name__"))));
}

std::vector<double> weight_decays(const py::object& wd, std::size_t n) {
  std::vector<double> out;
  if (py::isinstance<py::list>(wd) || py::isinstance<py::tuple>(wd)) {
    for (auto x : wd) out.push_back(as_weight_decay(x));
    if (out.size() != n)
      throw py::value_error("weight_decay has " + std::to_string(out.size()) + " values but there are " +
                            std::to_string(n) + " parameters");
  } else {
    out.assign(n, as_weight_decay(wd));
  }
  for (double x : out) require(check_weight_decay(x));
  return out;
}

// None is off; a threshold that is given must be in its range (so 0 is refused, not "off").
GradientOptions gradient_options(std::optional<double> clipnorm, std::optional<double> global_clipnorm,
                                 bool skip_nonfinite) {
  if (clipnorm) require(check_range(kClipnorm, *clipnorm));
  if (global_clipnorm) require(check_range(kGlobalClipnorm, *global_clipnorm));
  const GradientOptions o{clipnorm.value_or(0.0), global_clipnorm.value_or(0.0), skip_nonfinite};
  require(check_gradient_options(o));  // at most one of them
  return o;
}

// Builds TensorSlots<T> from gathered args (per_tensor arrays per tensor: param, grad, then the
// slots given, array s being the rule's slot slot_of[s]) and runs `apply`.
template <class T, class Apply>
bool run_typed(const std::vector<Arg>& args, std::size_t per_tensor, const std::vector<int>& slot_of,
               const std::vector<double>& wd, Apply&& apply) {
  std::vector<TensorSlots<T>> tensors(args.size() / per_tensor);
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    Arg* a = const_cast<Arg*>(&args[t * per_tensor]);  // arrays were checked writeable
    tensors[t].param = static_cast<T*>(a[0].array.mutable_data());
    tensors[t].grad = static_cast<const T*>(a[1].array.data());
    for (std::size_t s = 2; s < per_tensor; ++s)
      tensors[t].slots[slot_of[s]] = static_cast<T*>(a[s].array.mutable_data());
    tensors[t].size = std::int64_t(a[0].array.size());
    tensors[t].weight_decay = wd[t];
  }
  py::gil_scoped_release release;
  return apply(tensors);
}

// Dispatches the common dtype to run_typed<T>. `apply` is a generic lambda over tensors.
template <class Apply>
bool run(const std::vector<Arg>& args, std::size_t per_tensor, const std::vector<int>& slot_of,
         const std::vector<double>& wd, Apply&& apply) {
  const DType dtype = check_arrays(args, per_tensor);
  switch (dtype) {
    case DType::float32: return run_typed<float>(args, per_tensor, slot_of, wd, apply);
    case DType::float64: return run_typed<double>(args, per_tensor, slot_of, wd, apply);
    case DType::float16: return run_typed<half>(args, per_tensor, slot_of, wd, apply);
    case DType::bfloat16: return run_typed<bfloat16>(args, per_tensor, slot_of, wd, apply);
  }
  return false;
}

// Sparse steps: per tensor [param, values, slots...] plus an integer index array each.
std::vector<std::vector<std::int64_t>> gather_indices(const py::object& indices, const std::vector<Arg>& args,
                                                      std::size_t per_tensor) {
  std::vector<py::handle> items = as_list(indices, "indices");
  const std::size_t n = args.size() / per_tensor;
  if (items.size() != n)
    throw py::value_error("indices has " + std::to_string(items.size()) + " arrays but params has " +
                          std::to_string(n));
  std::vector<std::vector<std::int64_t>> out(n);
  for (std::size_t t = 0; t < n; ++t) {
    py::array idx = as_array(items[t], "indices", t);
    const char kind = idx.dtype().kind();
    if (kind != 'i' && kind != 'u')
      throw py::type_error(arg_name("indices", t) + " must be an integer array, got dtype " +
                           std::string(py::str(idx.dtype())));
    if (idx.ndim() != 1)
      throw py::value_error(arg_name("indices", t) + " must be 1-D, got shape " + describe_shape(idx));
    const py::array& param = args[t * per_tensor].array;
    const py::array& values = args[t * per_tensor + 1].array;
    if (param.ndim() < 1) throw py::value_error(arg_name("params", t) + " must have at least one dimension");
    if (values.ndim() < 1 || values.shape(0) != idx.shape(0))
      throw py::value_error(arg_name("values", t) + " has shape " + describe_shape(values) + " but " +
                            arg_name("indices", t) + " has " + std::to_string(idx.shape(0)) + " entries");
    auto as64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(idx);
    out[t].assign(as64.data(), as64.data() + as64.size());
    require(check_indices(out[t].data(), std::int64_t(out[t].size()), param.shape(0)));
  }
  return out;
}

template <class Rule>
bool run_sparse(const std::vector<Arg>& args, std::size_t per_tensor, const std::vector<int>& slot_of,
                const py::object& indices, const std::vector<double>& wd, const typename Rule::Hyper& h,
                const GradientOptions& opt, bool lazy) {
  const DType dtype = check_arrays(args, per_tensor);
  const auto idx = gather_indices(indices, args, per_tensor);
  auto typed = [&](auto tag) {
    using T = decltype(tag);
    std::vector<SparseTensorSlots<T>> tensors(args.size() / per_tensor);
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      Arg* a = const_cast<Arg*>(&args[t * per_tensor]);  // arrays were checked writeable
      auto& st = tensors[t];
      st.param = static_cast<T*>(a[0].array.mutable_data());
      st.values = static_cast<const T*>(a[1].array.data());
      for (std::size_t s = 2; s < per_tensor; ++s) st.slots[slot_of[s]] = static_cast<T*>(a[s].array.mutable_data());
      st.rows = a[0].array.shape(0);
      st.row_size = st.rows ? std::int64_t(a[0].array.size()) / st.rows : 0;
      st.indices = idx[t].data();
      st.nnz = std::int64_t(idx[t].size());
      st.weight_decay = wd[t];
    }
    py::gil_scoped_release release;
    return apply_sparse<Rule>(tensors, h, lazy, opt, pool_executor());
  };
  switch (dtype) {
    case DType::float32: return typed(float{});
    case DType::float64: return typed(double{});
    case DType::float16: return typed(half{});
    case DType::bfloat16: return typed(bfloat16{});
  }
  return false;
}

// ------------------------------------------------------------------------------ the functions of a rule
// Generated from the rule's trait (rules/<rule>.h), for every rule of PYOPT_RULES:
//   <rule>(params, grads, <slot lists>, <optional slot lists>=None, *, <hyperparameters>,
//          <flags>=False, weight_decay=0.0, clipnorm=None, global_clipnorm=None, skip_nonfinite=False)
//   <rule>_sparse(params, values, indices, <slot lists>, <optional slot lists>=None, *, <the same>, lazy=False)
//   check_<rule>(<hyperparameters>) -> "" when each is in its range, else the message
// An optional slot list given sets its flag (Adam: vhats -> amsgrad).

enum class Form { dense, sparse, check };

// What a Python argument is.
enum class Kind {
  updated,        // a list of arrays written in place: params
  slot,           // a list of arrays written in place: a required slot
  gradient,       // grads or values (read)
  indices,        // the sparse gradient's row numbers
  optional_slot,  // a list of arrays, or None
  real,           // a hyperparameter (float64)
  integer,        // a hyperparameter (int64)
  flag,
  weight_decay,
  clipnorm,
  global_clipnorm,
  skip_nonfinite,
  lazy,
};

// The C++ type pybind11 converts an argument of kind K to (as the hand-written functions had).
template <Kind K>
using ArgType = std::conditional_t<
    K == Kind::real, double,
    std::conditional_t<K == Kind::integer, std::int64_t,
                       std::conditional_t<K == Kind::flag || K == Kind::skip_nonfinite || K == Kind::lazy, bool,
                                          std::conditional_t<K == Kind::clipnorm || K == Kind::global_clipnorm,
                                                             std::optional<double>, py::object>>>>;

struct PyArg {
  const char* name;
  Kind kind;
  std::size_t index;  // of the rule's slot, hyperparameter or flag
};

// The Python arguments of a function of Rule, in order: kArrays positional ones (the arrays),
// then the keyword-only ones.
template <class Rule, Form F>
struct Signature {
  static constexpr std::size_t kArrays = F == Form::check ? 0 : (F == Form::sparse ? 3 : 2) + Rule::kSlots.size();
  static constexpr std::size_t kOptions = F == Form::check ? 0 : (F == Form::sparse ? 5 : 4);
  static constexpr std::size_t kSize =
      kArrays + Rule::kParams.size() + (F == Form::check ? 0 : Rule::kFlags.size()) + kOptions;

  static constexpr std::array<PyArg, kSize> args() {
    std::array<PyArg, kSize> a{};
    std::size_t i = 0;
    if (F != Form::check) {
      a[i++] = {"params", Kind::updated, 0};
      a[i++] = {F == Form::sparse ? "values" : "grads", Kind::gradient, 0};
      if (F == Form::sparse) a[i++] = {"indices", Kind::indices, 0};
      for (std::size_t k = 0; k < Rule::kSlots.size(); ++k)
        a[i++] = {Rule::kSlots[k].list, Rule::kSlots[k].optional() ? Kind::optional_slot : Kind::slot, k};
    }
    for (std::size_t k = 0; k < Rule::kParams.size(); ++k)
      a[i++] = {Rule::kParams[k].name, Rule::kParams[k].range.integer ? Kind::integer : Kind::real, k};
    if (F == Form::check) return a;
    for (std::size_t k = 0; k < Rule::kFlags.size(); ++k) a[i++] = {Rule::kFlags[k].name, Kind::flag, k};
    a[i++] = {kWeightDecay.name, Kind::weight_decay, 0};
    a[i++] = {kClipnorm.name, Kind::clipnorm, 0};
    a[i++] = {kGlobalClipnorm.name, Kind::global_clipnorm, 0};
    a[i++] = {"skip_nonfinite", Kind::skip_nonfinite, 0};
    if (F == Form::sparse) a[i++] = {"lazy", Kind::lazy, 0};
    return a;
  }
  static constexpr std::array<PyArg, kSize> kArgs = args();

  // The pybind11 annotation of argument I: its name, and its default where it has one.
  template <std::size_t I>
  static auto annotation() {
    constexpr PyArg a = kArgs[I];
    if constexpr (a.kind == Kind::optional_slot || a.kind == Kind::clipnorm || a.kind == Kind::global_clipnorm)
      return py::arg(a.name) = py::none();
    else if constexpr (a.kind == Kind::flag || a.kind == Kind::skip_nonfinite || a.kind == Kind::lazy)
      return py::arg(a.name) = false;
    else if constexpr (a.kind == Kind::weight_decay)
      return py::arg(a.name) = kWeightDecay.value;
    else
      return py::arg(a.name);
  }
  template <std::size_t... I>
  static auto annotations(std::index_sequence<I...>) {
    return std::make_tuple(annotation<I>()...);
  }
  template <std::size_t... I>
  static auto keyword_annotations(std::index_sequence<I...>) {
    return std::make_tuple(py::kw_only(), annotation<kArrays + I>()...);
  }
  // Every annotation in order, py::kw_only() after the arrays (none for check_<rule>).
  static auto all_annotations() {
    if constexpr (F == Form::check)
      return annotations(std::make_index_sequence<kSize>{});
    else
      return std::tuple_cat(annotations(std::make_index_sequence<kArrays>{}),
                            keyword_annotations(std::make_index_sequence<kSize - kArrays>{}));
  }
};

// The arguments of one call, by meaning.
template <class Rule>
struct Call {
  typename Rule::Hyper hyper{};
  std::vector<std::pair<const char*, py::object>> lists;  // params, grads or values, the slots given
  std::vector<bool> written;                              // per list
  std::vector<int> slot_of;                               // per list: its slot of the rule (-1: none)
  py::object indices, weight_decay;
  std::optional<double> clipnorm, global_clipnorm;
  bool skip_nonfinite = false, lazy = false;

  void take(const PyArg& a, const py::object& x) {
    switch (a.kind) {
      case Kind::optional_slot:
        if (x.is_none()) return;
        hyper.*Rule::kSlots[a.index].given.field = true;
        [[fallthrough]];
      case Kind::slot:
      case Kind::updated:
      case Kind::gradient:
        lists.push_back({a.name, x});
        written.push_back(a.kind != Kind::gradient);
        slot_of.push_back(a.kind == Kind::slot || a.kind == Kind::optional_slot ? int(a.index) : -1);
        return;
      case Kind::indices: indices = x; return;
      default: weight_decay = x; return;
    }
  }
  void take(const PyArg& a, double x) { hyper.*Rule::kParams[a.index].field = x; }
  void take(const PyArg& a, std::int64_t x) { hyper.*Rule::kParams[a.index].field = double(x); }
  void take(const PyArg& a, bool x) {
    if (a.kind == Kind::flag)
      hyper.*Rule::kFlags[a.index].field = x;
    else if (a.kind == Kind::lazy)
      lazy = x;
    else
      skip_nonfinite = x;
  }
  void take(const PyArg& a, std::optional<double> x) { (a.kind == Kind::clipnorm ? clipnorm : global_clipnorm) = x; }
};

template <class Rule>
struct RuleFunctions {
  // Checks in this order: hyperparameters, clipping, the lists, weight decay, then the arrays.
  static bool dense(Call<Rule>& c) {
    require(check<Rule>(c.hyper));
    const GradientOptions opt = gradient_options(c.clipnorm, c.global_clipnorm, c.skip_nonfinite);
    const std::size_t per_tensor = c.lists.size();
    auto args = gather(c.lists, c.written);
    auto wd = weight_decays(c.weight_decay, args.size() / per_tensor);
    return run(args, per_tensor, c.slot_of, wd,
               [&](const auto& tensors) { return apply<Rule>(tensors, c.hyper, opt, pool_executor()); });
  }
  static bool sparse(Call<Rule>& c) {
    require(check<Rule>(c.hyper));
    const GradientOptions opt = gradient_options(c.clipnorm, c.global_clipnorm, c.skip_nonfinite);
    const std::size_t per_tensor = c.lists.size();
    auto args = gather(c.lists, c.written, /*rows_of_param_list=*/1);
    auto wd = weight_decays(c.weight_decay, args.size() / per_tensor);
    return run_sparse<Rule>(args, per_tensor, c.slot_of, c.indices, wd, c.hyper, opt, c.lazy);
  }

  // The function of form F: one C++ parameter per Python argument, typed as pybind11 converts it.
  template <Form F, std::size_t... I>
  static auto function(std::index_sequence<I...>) {
    using S = Signature<Rule, F>;
    return [](ArgType<S::kArgs[I].kind>... values) {
      Call<Rule> c;
      (c.take(S::kArgs[I], values), ...);
      if constexpr (F == Form::check)
        return check_ranges<Rule>(c.hyper);
      else if constexpr (F == Form::sparse)
        return sparse(c);
      else
        return dense(c);
    };
  }
  template <Form F>
  static void def(py::module_& m, const std::string& name) {
    using S = Signature<Rule, F>;
    const auto fn = function<F>(std::make_index_sequence<S::kSize>{});
    std::apply([&](const auto&... annotations) { m.def(name.c_str(), fn, annotations...); }, S::all_annotations());
  }
  static void def(py::module_& m) {
    def<Form::dense>(m, Rule::kName);
    def<Form::sparse>(m, std::string(Rule::kName) + "_sparse");
    def<Form::check>(m, std::string("check_") + Rule::kName);
  }

  // The trait's tables, for tests that compare them with the Python rule table.
  static py::dict describe() {
    py::list params, flags, slots;
    for (const auto& p : Rule::kParams) {
      const auto* needed = needed_slot<Rule>(p);
      params.append(py::dict(py::arg("name") = p.name,
                             py::arg("default") = p.range.integer ? py::object(py::int_(std::int64_t(p.value)))
                                                                  : py::object(py::float_(p.value)),
                             py::arg("must_be") = range_text(p.range), py::arg("integer") = p.range.integer,
                             py::arg("needs") = needed ? py::object(py::str(needed->given.name)) : py::none()));
    }
    for (const auto& f : Rule::kFlags) flags.append(f.name);
    for (const auto& s : Rule::kSlots)
      slots.append(py::dict(py::arg("name") = s.name, py::arg("list") = s.list,
                            py::arg("given_flag") = s.optional() ? py::object(py::str(s.given.name)) : py::none()));
    return py::dict(py::arg("params") = params, py::arg("flags") = flags, py::arg("slots") = slots);
  }
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyopt compiled kernels (internal; use pyopt.kernels)";
  // Per rule: <rule>, <rule>_sparse, check_<rule>; and rules[<rule>], its tables.
  py::dict rules;
#define PYOPT_DEF_RULE(Rule)   \
  RuleFunctions<Rule>::def(m); \
  rules[Rule::kName] = RuleFunctions<Rule>::describe();
  PYOPT_RULES(PYOPT_DEF_RULE)
#undef PYOPT_DEF_RULE
  m.attr("rules") = rules;
  m.def("check_weight_decay", &check_weight_decay, py::arg("weight_decay"));
  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "The instruction-set path in use.");
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (Isa i : supported_isas()) out.push_back(isa_name(i));
    return out;
  });
  m.def("set_isa", [](const std::string& name) {
    for (Isa i : {Isa::baseline, Isa::avx2, Isa::avx512})
      if (name == isa_name(i)) {
        if (!set_active_isa(i)) throw py::value_error("ISA " + name + " is not supported by this CPU");
        return;
      }
    throw py::value_error("unknown ISA '" + name + "'; expected baseline, avx2 or avx512");
  });
  m.def("num_threads", [] { return pool().size(); });
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("num_threads must be >= 1, got " + std::to_string(n));
    py::gil_scoped_release release;
    pool().resize(n);
  });
  m.def(
      "stream_triad",
      [](py::array_t<float, py::array::c_style> a, py::array_t<float, py::array::c_style> b,
         py::array_t<float, py::array::c_style> c, float s) {
        if (a.size() != b.size() || a.size() != c.size()) throw py::value_error("a, b and c must have the same size");
        if (!a.writeable()) throw py::value_error("a is read-only");
        float* pa = a.mutable_data();
        const float* pb = b.data();
        const float* pc = c.data();
        const std::int64_t n = a.size();
        py::gil_scoped_release release;
        stream_triad(pa, pb, pc, s, n, pool_executor());
      },
      py::arg("a"), py::arg("b"), py::arg("c"), py::arg("s"),
      "Bandwidth probe (float32, contiguous): a = b + s*c on the kernels' thread pool; 12 bytes per element.");
  m.attr("chunk_elements") = kChunkElems;
}
