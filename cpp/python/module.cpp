// pybind11 bindings `pyopt._core`: check the NumPy buffers, release the GIL, hand raw
// pointers to the core. All maths lives in cpp/include/pyopt.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pyopt/apply.h"
#include "pyopt/probe.h"
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
  return [](std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& fn) {
    pool().parallel_for(n, fn);
  };
}

void require(const std::string& error) {
  if (!error.empty()) throw py::value_error(error);
}

std::string describe_shape(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += std::to_string(a.shape(i)) + (a.ndim() == 1 ? "," : i + 1 < a.ndim() ? ", " : "");
  return s + ")";
}

// "grads[3]": the name of array 3 of the list grads in messages.
std::string arg_name(const char* list, std::size_t index) {
  return std::string(list) + "[" + std::to_string(index) + "]";
}

// One array argument, e.g. grads[3]. The name is built only for a message: a step can
// have thousands of arrays, and the binding's work per array is part of every call.
struct Arg {
  py::array array;  // a reference, held while the GIL is released
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

// By type number, not dtype.name: NumPy computes the name in Python, which costs ~10 us.
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
        throw py::value_error(a.name() + " has shape " + describe_shape(a.array) + " but " + param.name() + " has shape " +
                              describe_shape(param.array) +
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
        throw py::value_error(a.name() + " and " + b.name() + " overlap in memory; every updated array must be separate");
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

GradientOptions gradient_options(std::optional<double> clipnorm, std::optional<double> global_clipnorm,
                                 bool skip_nonfinite) {
  GradientOptions o;
  if (clipnorm) {
    if (!(*clipnorm > 0.0)) require("clipnorm must be a finite number > 0 (or None), got " + std::to_string(*clipnorm));
    o.clipnorm = *clipnorm;
  }
  if (global_clipnorm) {
    if (!(*global_clipnorm > 0.0))
      require("global_clipnorm must be a finite number > 0 (or None), got " + std::to_string(*global_clipnorm));
    o.global_clipnorm = *global_clipnorm;
  }
  o.skip_nonfinite = skip_nonfinite;
  require(check_gradient_options(o));
  return o;
}

// Builds TensorSlots<T> from gathered args (per_tensor arrays per tensor) and runs `apply`.
template <class T, class Apply>
bool run_typed(const std::vector<Arg>& args, std::size_t per_tensor, const std::vector<double>& wd, Apply&& apply) {
  std::vector<TensorSlots<T>> tensors(args.size() / per_tensor);
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    Arg* a = const_cast<Arg*>(&args[t * per_tensor]);  // arrays were checked writeable
    tensors[t].param = static_cast<T*>(a[0].array.mutable_data());
    tensors[t].grad = static_cast<const T*>(a[1].array.data());
    for (std::size_t s = 2; s < per_tensor; ++s) tensors[t].slots[s - 2] = static_cast<T*>(a[s].array.mutable_data());
    tensors[t].size = std::int64_t(a[0].array.size());
    tensors[t].weight_decay = wd[t];
  }
  py::gil_scoped_release release;
  return apply(tensors);
}

// Dispatches the common dtype to run_typed<T>. `apply` is a generic lambda over tensors.
template <class Apply>
bool run(const std::vector<Arg>& args, std::size_t per_tensor, const std::vector<double>& wd, Apply&& apply) {
  const DType dtype = check_arrays(args, per_tensor);
  switch (dtype) {
    case DType::float32: return run_typed<float>(args, per_tensor, wd, apply);
    case DType::float64: return run_typed<double>(args, per_tensor, wd, apply);
    case DType::float16: return run_typed<half>(args, per_tensor, wd, apply);
    case DType::bfloat16: return run_typed<bfloat16>(args, per_tensor, wd, apply);
  }
  return false;
}


// Sparse steps: per tensor [param, values, slots...] plus an integer index array each.
std::vector<std::vector<std::int64_t>> gather_indices(const py::object& indices, const std::vector<Arg>& args,
                                                      std::size_t per_tensor) {
  std::vector<py::handle> items = as_list(indices, "indices");
  const std::size_t n = args.size() / per_tensor;
  if (items.size() != n)
    throw py::value_error("indices has " + std::to_string(items.size()) + " arrays but params has " + std::to_string(n));
  std::vector<std::vector<std::int64_t>> out(n);
  for (std::size_t t = 0; t < n; ++t) {
    py::array idx = as_array(items[t], "indices", t);
    const char kind = idx.dtype().kind();
    if (kind != 'i' && kind != 'u')
      throw py::type_error(arg_name("indices", t) + " must be an integer array, got dtype " +
                           std::string(py::str(idx.dtype())));
    if (idx.ndim() != 1) throw py::value_error(arg_name("indices", t) + " must be 1-D, got shape " + describe_shape(idx));
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

template <template <class> class Update, class Hyper>
bool run_sparse(const std::vector<Arg>& args, std::size_t per_tensor, const py::object& indices,
                const std::vector<double>& wd, const Hyper& h, const GradientOptions& opt, bool lazy) {
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
      for (std::size_t s = 2; s < per_tensor; ++s) st.slots[s - 2] = static_cast<T*>(a[s].array.mutable_data());
      st.rows = a[0].array.shape(0);
      st.row_size = st.rows ? std::int64_t(a[0].array.size()) / st.rows : 0;
      st.indices = idx[t].data();
      st.nnz = std::int64_t(idx[t].size());
      st.weight_decay = wd[t];
    }
    py::gil_scoped_release release;
    return apply_sparse(tensors, lazy, opt, pool_executor(), Update<T>{h});
  };
  switch (dtype) {
    case DType::float32: return typed(float{});
    case DType::float64: return typed(double{});
    case DType::float16: return typed(half{});
    case DType::bfloat16: return typed(bfloat16{});
  }
  return false;
}

bool gradient_descent(py::object params, py::object grads, double lr, py::object weight_decay,
                      std::optional<double> clipnorm, std::optional<double> global_clipnorm, bool skip_nonfinite) {
  GradientDescentHyper h{lr};
  require(check(h));
  const GradientOptions opt = gradient_options(clipnorm, global_clipnorm, skip_nonfinite);
  auto args = gather({{"params", params}, {"grads", grads}}, {true, false});
  auto wd = weight_decays(weight_decay, args.size() / 2);
  return run(args, 2, wd, [&](const auto& tensors) { return apply_gradient_descent(tensors, h, opt, pool_executor()); });
}

bool momentum(py::object params, py::object grads, py::object velocities, double lr, double mu, bool nesterov,
              py::object weight_decay, std::optional<double> clipnorm, std::optional<double> global_clipnorm,
              bool skip_nonfinite) {
  MomentumHyper h{lr, mu, nesterov};
  require(check(h));
  const GradientOptions opt = gradient_options(clipnorm, global_clipnorm, skip_nonfinite);
  auto args = gather({{"params", params}, {"grads", grads}, {"velocities", velocities}}, {true, false, true});
  auto wd = weight_decays(weight_decay, args.size() / 3);
  return run(args, 3, wd, [&](const auto& tensors) { return apply_momentum(tensors, h, opt, pool_executor()); });
}

bool adam(py::object params, py::object grads, py::object ms, py::object vs, py::object vhats, double lr,
          double beta_1, double beta_2, double epsilon, std::int64_t step, py::object weight_decay,
          std::optional<double> clipnorm, std::optional<double> global_clipnorm, bool skip_nonfinite) {
  AdamHyper h{lr, beta_1, beta_2, epsilon, step, !vhats.is_none()};
  require(check(h));
  const GradientOptions opt = gradient_options(clipnorm, global_clipnorm, skip_nonfinite);
  std::vector<std::pair<const char*, py::object>> lists{{"params", params}, {"grads", grads}, {"ms", ms}, {"vs", vs}};
  std::vector<bool> written{true, false, true, true};
  if (h.amsgrad) {
    lists.push_back({"vhats", vhats});
    written.push_back(true);
  }
  auto args = gather(lists, written);
  auto wd = weight_decays(weight_decay, args.size() / lists.size());
  return run(args, lists.size(), wd, [&](const auto& tensors) { return apply_adam(tensors, h, opt, pool_executor()); });
}


bool gradient_descent_sparse(py::object params, py::object values, py::object indices, double lr,
                             py::object weight_decay, std::optional<double> clipnorm,
                             std::optional<double> global_clipnorm, bool skip_nonfinite, bool lazy) {
  GradientDescentHyper h{lr};
  require(check(h));
  const GradientOptions opt = gradient_options(clipnorm, global_clipnorm, skip_nonfinite);
  auto args = gather({{"params", params}, {"values", values}}, {true, false}, 1);
  return run_sparse<GradientDescentUpdate>(args, 2, indices, weight_decays(weight_decay, args.size() / 2), h, opt,
                                           lazy);
}

bool momentum_sparse(py::object params, py::object values, py::object indices, py::object velocities, double lr,
                     double mu, bool nesterov, py::object weight_decay, std::optional<double> clipnorm,
                     std::optional<double> global_clipnorm, bool skip_nonfinite, bool lazy) {
  MomentumHyper h{lr, mu, nesterov};
  require(check(h));
  const GradientOptions opt = gradient_options(clipnorm, global_clipnorm, skip_nonfinite);
  auto args = gather({{"params", params}, {"values", values}, {"velocities", velocities}}, {true, false, true}, 1);
  return run_sparse<MomentumUpdate>(args, 3, indices, weight_decays(weight_decay, args.size() / 3), h, opt, lazy);
}

bool adam_sparse(py::object params, py::object values, py::object indices, py::object ms, py::object vs,
                 py::object vhats, double lr, double beta_1, double beta_2, double epsilon, std::int64_t step,
                 py::object weight_decay, std::optional<double> clipnorm, std::optional<double> global_clipnorm,
                 bool skip_nonfinite, bool lazy) {
  AdamHyper h{lr, beta_1, beta_2, epsilon, step, !vhats.is_none()};
  require(check(h));
  const GradientOptions opt = gradient_options(clipnorm, global_clipnorm, skip_nonfinite);
  std::vector<std::pair<const char*, py::object>> lists{{"params", params}, {"values", values}, {"ms", ms}, {"vs", vs}};
  std::vector<bool> written{true, false, true, true};
  if (h.amsgrad) {
    lists.push_back({"vhats", vhats});
    written.push_back(true);
  }
  auto args = gather(lists, written, 1);
  return run_sparse<AdamUpdate>(args, lists.size(), indices, weight_decays(weight_decay, args.size() / lists.size()),
                                h, opt, lazy);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyopt compiled kernels (internal; use pyopt.kernels)";
  using py::arg;
  m.def("gradient_descent", &gradient_descent, arg("params"), arg("grads"), py::kw_only(), arg("lr"),
        arg("weight_decay") = 0.0, arg("clipnorm") = py::none(), arg("global_clipnorm") = py::none(),
        arg("skip_nonfinite") = false);
  m.def("momentum", &momentum, arg("params"), arg("grads"), arg("velocities"), py::kw_only(), arg("lr"),
        arg("momentum"), arg("nesterov") = false, arg("weight_decay") = 0.0, arg("clipnorm") = py::none(),
        arg("global_clipnorm") = py::none(), arg("skip_nonfinite") = false);
  m.def("adam", &adam, arg("params"), arg("grads"), arg("ms"), arg("vs"), arg("vhats") = py::none(), py::kw_only(),
        arg("lr"), arg("beta_1"), arg("beta_2"), arg("epsilon"), arg("step"), arg("weight_decay") = 0.0,
        arg("clipnorm") = py::none(), arg("global_clipnorm") = py::none(), arg("skip_nonfinite") = false);
  m.def("gradient_descent_sparse", &gradient_descent_sparse, arg("params"), arg("values"), arg("indices"),
        py::kw_only(), arg("lr"), arg("weight_decay") = 0.0, arg("clipnorm") = py::none(),
        arg("global_clipnorm") = py::none(), arg("skip_nonfinite") = false, arg("lazy") = false);
  m.def("momentum_sparse", &momentum_sparse, arg("params"), arg("values"), arg("indices"), arg("velocities"),
        py::kw_only(), arg("lr"), arg("momentum"), arg("nesterov") = false, arg("weight_decay") = 0.0,
        arg("clipnorm") = py::none(), arg("global_clipnorm") = py::none(), arg("skip_nonfinite") = false,
        arg("lazy") = false);
  m.def("adam_sparse", &adam_sparse, arg("params"), arg("values"), arg("indices"), arg("ms"), arg("vs"),
        arg("vhats") = py::none(), py::kw_only(), arg("lr"), arg("beta_1"), arg("beta_2"), arg("epsilon"), arg("step"),
        arg("weight_decay") = 0.0, arg("clipnorm") = py::none(), arg("global_clipnorm") = py::none(),
        arg("skip_nonfinite") = false, arg("lazy") = false);
  // Hyperparameter checks shared with the other front ends: "" when valid, else the message.
  m.def("check_gradient_descent", [](double lr) { return check(GradientDescentHyper{lr}); }, py::arg("lr"));
  m.def("check_momentum", [](double lr, double mu) { return check(MomentumHyper{lr, mu, false}); }, py::arg("lr"),
        py::arg("momentum"));
  m.def("check_adam",
        [](double lr, double beta_1, double beta_2, double epsilon, std::int64_t step) {
          return check(AdamHyper{lr, beta_1, beta_2, epsilon, step, false});
        },
        py::arg("lr"), py::arg("beta_1"), py::arg("beta_2"), py::arg("epsilon"), py::arg("step"));
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
