// Error helpers shared by ops.cc and op_kernels.cc.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/types.h"

namespace tensorflow {
namespace pyopt_tf {

// An InvalidArgument status with the pieces concatenated.
template <class... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// Python's name of a dtype ("float32", not TF's C++ "float").
inline std::string DTypeName(DataType d) {
  switch (d) {
    case DT_HALF: return "float16";
    case DT_BFLOAT16: return "bfloat16";
    case DT_FLOAT: return "float32";
    case DT_DOUBLE: return "float64";
    default: return DataTypeString(d);
  }
}

}  // namespace pyopt_tf
}  // namespace tensorflow
