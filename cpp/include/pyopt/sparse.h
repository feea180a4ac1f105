// Row-sparse gradients (tf.IndexedSlices, e.g. from Embedding layers): `values` holds
// nnz rows of `row_size` elements for rows `indices` of a [rows, row_size] parameter.
//
// Duplicate indices are summed first (in the order given, in the compute type). Then:
//   dense-equivalent (default): the step equals the dense step with the densified gradient,
//     as Keras does (it densifies): rows without a gradient get g = 0, so momentum/Adam slots
//     decay and weight decay applies on every row;
//   lazy: only the rows present move (lazy-Adam semantics); other rows and their slots are
//     untouched.
// Clipping uses the norm of the summed (densified) gradient.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "apply.h"

namespace pyopt {

template <class T>
struct SparseTensorSlots {
  T* param = nullptr;
  T* slots[kMaxSlots] = {};  // as in TensorSlots
  std::int64_t rows = 0, row_size = 0;
  const T* values = nullptr;              // [nnz, row_size]
  const std::int64_t* indices = nullptr;  // [nnz]
  std::int64_t nnz = 0;
  double weight_decay = 0.0;
};

// "" when every index is in [0, rows), else a message naming the first bad one.
inline std::string check_indices(const std::int64_t* indices, std::int64_t nnz, std::int64_t rows) {
  for (std::int64_t k = 0; k < nnz; ++k)
    if (indices[k] < 0 || indices[k] >= rows)
      return "indices[" + std::to_string(k) + "] = " + std::to_string(indices[k]) + " is out of range [0, " +
             std::to_string(rows) + ")";
  return "";
}

// The unique rows of a sparse gradient, ascending, with their gradient rows summed.
template <class T>
struct SummedRows {
  std::vector<std::int64_t> rows;
  std::vector<T> values;  // [rows.size(), row_size]
};

template <class T>
SummedRows<T> sum_duplicate_rows(const SparseTensorSlots<T>& t) {
  using C = compute_t<T>;
  std::vector<std::int64_t> order(size_t(t.nnz));
  std::iota(order.begin(), order.end(), std::int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return t.indices[a] < t.indices[b]; });
  SummedRows<T> out;
  std::vector<C> acc(size_t(t.row_size));
  for (size_t k = 0; k < order.size();) {
    const std::int64_t row = t.indices[order[k]];
    std::fill(acc.begin(), acc.end(), C(0));
    for (; k < order.size() && t.indices[order[k]] == row; ++k) {
      const T* src = t.values + order[k] * t.row_size;
      for (std::int64_t j = 0; j < t.row_size; ++j) acc[size_t(j)] += load(src[j]);
    }
    out.rows.push_back(row);
    for (C x : acc) out.values.push_back(store<T>(x));
  }
  return out;
}

// One sparse step of Rule: its dense update applied row by row. Indices must have passed
// check_indices; hyperparameters check<Rule>(). Returns false when skipped as non-finite.
template <class Rule, class T>
bool apply_sparse(const std::vector<SparseTensorSlots<T>>& tensors, const typename Rule::Hyper& h, bool lazy,
                  const GradientOptions& opt, const Executor& exec) {
  std::vector<SummedRows<T>> summed;
  std::vector<TensorSlots<T>> grads(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    summed.push_back(sum_duplicate_rows(tensors[i]));
    grads[i].grad = summed[i].values.data();
    grads[i].size = std::int64_t(summed[i].values.size());
  }
  std::vector<double> scales;
  if (!gradient_scales(grads, plan_chunks(detail::sizes_of(grads)), opt, exec, scales)) return false;

  // Rows to update, as one-row tensors with the scale of their parameter.
  std::int64_t widest = 0;
  for (const auto& t : tensors) widest = std::max(widest, t.row_size);
  const std::vector<T> zeros(size_t(lazy ? 0 : widest), store<T>(compute_t<T>(0)));
  std::vector<TensorSlots<T>> rows;
  std::vector<double> row_scales;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const auto& s = summed[i];
    auto add_row = [&](std::int64_t r, const T* grad) {
      TensorSlots<T> row;
      row.param = t.param + r * t.row_size;
      for (std::size_t k = 0; k < kMaxSlots; ++k) row.slots[k] = t.slots[k] ? t.slots[k] + r * t.row_size : nullptr;
      row.grad = grad;
      row.size = t.row_size;
      row.weight_decay = t.weight_decay;
      rows.push_back(row);
      row_scales.push_back(scales[i]);
    };
    if (lazy) {
      for (size_t k = 0; k < s.rows.size(); ++k) add_row(s.rows[k], s.values.data() + k * size_t(t.row_size));
    } else {
      size_t k = 0;
      for (std::int64_t r = 0; r < t.rows; ++r) {
        const bool present = k < s.rows.size() && s.rows[k] == r;
        add_row(r, present ? s.values.data() + (k++) * size_t(t.row_size) : zeros.data());
      }
    }
  }
  detail::update_pass(rows, plan_chunks(detail::sizes_of(rows)), row_scales, exec, Update<Rule, T>(h));
  return true;
}

}  // namespace pyopt
