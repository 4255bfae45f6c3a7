// The gradient table's cases, shared by the gradient tests and the JIT-vs-evaluator tests.
#pragma once

#include <ostream>
#include <regex>
#include <string>
#include <vector>

namespace slope {

struct Case {
  const char* name;
  const char* source; // `$T` stands for the float type; the function checked is `f`
};

// Inputs are drawn from N(0, 1); functions with a restricted domain map into it first.
inline const Case kCases[] = {
    {"add_sub_neg", "fn f(x: $T[n], y: $T[n]) -> $T { sum(x + y - (-x) * 2 - 3) }"},
    {"mul_div", "fn f(x: $T[n], y: $T[n]) -> $T { sum(x * y / (y^2 + 1)) }"},
    {"scalar_broadcast", "fn f(a: $T, x: $T[n]) -> $T { sum(a * x + a / 2) }"},
    // NumPy broadcasting (v3): the gradient of a stretched operand sums over the stretch.
    {"broadcast_row", "fn f(X: $T[n, k], W: $T[k, m], b: $T[m]) -> $T { sum(tanh(X @ W + b)) }"},
    {"broadcast_unit_extents",
     "fn f(u: $T[n, 1], v: $T[1, m], X: $T[n, m]) -> $T { sum(sin(u * v) + X / (u^2 + 1) - v) }"},
    {"broadcast_functions", "fn f(X: $T[n, m], b: $T[m], c: $T[n, 1]) -> $T { sum(max(X, b) + "
                            "pow(X^2 + 1, c) + atan2(b, c) + select(X > b, X * c, b)) }"},
    {"broadcast_rank3", "fn f(T: $T[2, n, m], b: $T[m], c: $T[n, 1]) -> $T { sum(T * b - c) }"},
    {"powi_const", "fn f(x: $T[n]) -> $T { sum(x^3 - x^2 + x^1 + x^0 + (x^2 + 1)^-2) }"},
    {"powi_var", "fn f(x: $T[n], k: i64) -> $T { sum(x^k) + sum(pow(x, k)) }"},
    {"pow", "fn f(x: $T[n], y: $T[n]) -> $T { sum(pow(x^2 + 1, y) + (x^2 + 0.5)^0.5) }"},
    {"exp_log",
     "fn f(x: $T[n]) -> $T { sum(exp(0.5 * x) + log(x^2 + 1) + log1p(x^2) + expm1(x)) }"},
    {"sqrt_abs", "fn f(x: $T[n]) -> $T { sum(sqrt(x^2 + 1) + abs(x)) }"},
    {"trig", "fn f(x: $T[n]) -> $T { sum(sin(x) + cos(x) + tan(0.3 * x) + atan(x)) }"},
    {"inverse_trig", "fn f(x: $T[n]) -> $T { sum(asin(0.8 * tanh(x)) + acos(0.8 * tanh(x))) }"},
    {"hyperbolic", "fn f(x: $T[n]) -> $T { sum(sinh(x) + cosh(x) + tanh(x)) }"},
    {"activations", "fn f(x: $T[n]) -> $T { sum(sigmoid(x) + relu(x) + softplus(x) + erf(x)) }"},
    {"lgamma", "fn f(x: $T[n]) -> $T { sum(lgamma(x^2 + 0.5)) }"},
    {"piecewise_constant",
     "fn f(x: $T[n]) -> $T { sum(x * floor(x) + x * ceil(x) + x * sign(x)) }"},
    {"atan2", "fn f(y: $T[n], x: $T[n]) -> $T { sum(atan2(y, x)) }"},
    {"min_max", "fn f(x: $T[n], y: $T[n]) -> $T { sum(min(x, y) * 2 + max(x, y) + max(x, 0)) }"},
    {"select_compare",
     "fn f(x: $T[n], y: $T[n]) -> $T { sum(select(x > y && !(x == y) || x <= -9, x * y, x + y)) + "
     "sum(select(x >= y, x, y)) + sum(select(x < y, x, y)) + sum(select(x != y, x, y)) }"},
    {"if_scalar", "fn f(x: $T, y: $T) -> $T { if x > y { x^2 * y } else { -x + y } }"},
    {"if_tensor",
     "fn f(x: $T[n], c: $T) -> $T { let t = if c > 0 { x * c } else { x^2 }; sum(t) }"},
    {"if_block", "fn f(x: $T) -> $T { if x > 0 { let y = x * x; y + x } else if x > -1 { 2 * x } "
                 "else { x^3 } }"},
    {"sum_prod_mean", "fn f(x: $T[n, m]) -> $T { sum(x) + prod(0.5 * x + 2) + mean(x^2) }"},
    {"prod_with_zero", "fn f(x: $T[n]) -> $T { prod(select(x > 0.3, x, 0 * x)) + prod(x) }"},
    {"max_min_full", "fn f(x: $T[n, m]) -> $T { max(x) * 2 + min(x) }"},
    {"logsumexp", "fn f(x: $T[n, m]) -> $T { logsumexp(x) + logsumexp(3 * x) }"},
    // A reduction inside logsumexp's body: the body must run once per element.
    {"logsumexp_inner_reductions",
     "fn f(A: $T[n, m], v: $T[m], x: $T[n]) -> $T { logsumexp(A @ v) + logsumexp[j](sum[k](x[j] - "
     "v[k])) + logsumexp[j](max[k](x[j] * v[k])) + logsumexp[j](mean(x[j] - v)) }"},
    {"indexed_reductions",
     "fn f(A: $T[n, m]) -> $T { let r[i] = sum[j](A[i, j]^2) + max[j](A[i, j]) + min[j](A[i, j]) + "
     "mean[j](A[i, j]) + logsumexp[j](A[i, j]) + prod[j](A[i, j] + 3); sum(r) }"},
    {"reduction_two_indices", "fn f(A: $T[n, m]) -> $T { sum[i, j](A[i, j] * f64i(i, j)) + max[i, "
                              "j](A[i, j]) }\nfn f64i(i: i64, j: i64) -> $T { $T(i + 2 * j) }"},
    // Triangular domains (v3): reduction extents affine in enclosing indices.
    {"triangular_reductions",
     "fn f(L: $T[n, n], x: $T[n]) -> $T { let y[j] = sum[c: j + 1](L[j, c] * x[c]) + max[c: j + "
     "1](L[j, c]) + logsumexp[c: n - j](L[j, c] * x[c]) + mean[c: j + 1](x[c]) + prod[c: j](0.5 "
     "* L[c, j] + 2); sum(y^2) + sum[j: n](min[c: n - j](x[c + j])) }"},
    // Triangular sums in a comprehension of literal extent, which a seeded JVP unrolls (its
    // rows would bind the sums' extents j + 1 to one name three times: forward.cpp, tiny()).
    {"triangular_literal_rows",
     "fn f(x: $T[n]) -> $T { let y[j: 3] = mean[l: j + 1](x[(j + l) % n]) * x[j % n]; "
     "logsumexp(y) }"},
    // A tree of loads in a triangle inside a nest (the GMM's x[i, c] - mu[k, c]): a table over
    // the column c per (i, k), of the extent c subscripts (compiler/lower/hoist.cpp); beside
    // it c + 1, which must not be tabulated, and exp(mu[k, c]) at a column of a triangle.
    {"triangle_column_table",
     "fn f(x: $T[n, d], mu: $T[K, d], w: $T[d, d]) -> $T { let q[i, k, j: d] = sum[c: j](w[j, c] "
     "* (x[i, c] - mu[k, c])) + sum[c: j](w[c, j] * (x[i, c + 1] * mu[k, c])); sum(q^2) + "
     "sum[i, k](sum[j: d](sum[c: j](exp(mu[k, c]) * (x[i, c] - mu[k, c]) * x[i, j]))) }"},
    // div(e, k) in a comprehension extent (v3): strided access proven in range.
    {"strided_extent", "fn f(x: $T[n], A: $T[n, m]) -> $T { let y[i: div(n, 2)] = x[2 * i] * x[2 "
                       "* i + 1]; let z[i: div(n + 1, 2), j] = A[2 * i, j]^2; sum(y) + sum(z) }"},
    // An affine subscript checked on entry (v3): ADBench's icf layout, icf[k, i] with i: m.
    {"entry_checked_subscript",
     "fn f(icf: $T[k, n], x: $T[m]) -> $T { sum[q, i: m](exp(icf[q, i]) * x[i]) }"},
    {"matmul_mm", "fn f(A: $T[n, k], B: $T[k, m]) -> $T { sum((A @ B)^2) }"},
    {"matmul_mv_vm_vv",
     "fn f(A: $T[n, m], v: $T[m], u: $T[n]) -> $T { sum(A @ v) + sum(u @ A) + v @ v }"},
    {"matmul_chain", "fn f(A: $T[n, n], B: $T[n, n]) -> $T { sum(tanh(A @ B) @ A) }"},
    {"transpose", "fn f(A: $T[n, m], B: $T[n, m]) -> $T { sum(transpose(A) @ B) }"},
    {"comprehension",
     "fn f(x: $T[n]) -> $T { let y[i] = x[i] * $T(i + 1); let z[i, j] = y[i] * x[j]; sum(z) }"},
    {"comprehension_extent",
     "fn f(x: $T[n]) -> $T { let d[i: n - 1] = x[i + 1] - x[i]; sum(d^2) + sum(x) }"},
    {"comprehension_reverse", "fn f(x: $T[n]) -> $T { let r[i] = x[n - 1 - i] * x[i]; sum(r) }"},
    {"row_subscript", "fn f(A: $T[n, m], v: $T[m]) -> $T { let r[i] = sum(A[i] * v); sum(r^2) }"},
    {"data_dependent_subscript",
     "fn f(x: $T[n], idx: i64[n]) -> $T { let y[i] = x[idx[i] % n] * x[i]; sum(y) }"},
    {"modular_subscript", "fn f(x: $T[n]) -> $T { let y[i] = x[(i + 1) % n] * x[i]; sum(y) }"},
    {"tensor_literal", "fn f(x: $T, y: $T) -> $T { let v = [x, 2 * y, x * y]; let M = [[x, y], [y, "
                       "1]]; sum(v^2) + sum(M @ M) }"},
    {"tensor_literal_rows", "fn f(a: $T[n], b: $T[n]) -> $T { let M = [a, b * 2]; sum(M^2) }"},
    {"calls", "fn f(x: $T[n], y: $T[n]) -> $T { g(x, y) + g(y, x) }\nfn g(a: $T[m], b: $T[m]) -> "
              "$T { sum(a * exp(b)) }"},
    {"call_tensor_result", "fn f(x: $T[n]) -> $T { let y = h(x); sum(y * x) }\nfn h(a: $T[m]) -> "
                           "$T[m] { let r[i] = a[i]^2; r }"},
    {"tuples", "fn f(x: $T[n]) -> $T { let (s, y) = g(x); s * sum(y) }\nfn g(a: $T[m]) -> ($T, "
               "$T[m]) { (sum(a), 2 * a) }"},
    {"zeros_ones_size",
     "fn f(x: $T[n]) -> $T { sum(x * ones($T[n]) + zeros($T[n])) * $T(size(x, 0)) }"},
    {"integer_promotion", "fn f(x: $T[n]) -> $T { sum(x) / n + sum(x * $T(n)) }"},
    {"hoisted_invariant",
     "fn f(x: $T[n]) -> $T { let p[i] = exp(x[i]) / sum(exp(x)); sum(p * x) }"},
    {"vector_result", "fn f(A: $T[n, m], v: $T[m]) -> $T[n] { A @ v }"},
    {"tuple_result", "fn f(x: $T[n]) -> ($T, $T[n]) { (sum(x^2), exp(x)) }"},
    // User derivative rules (@derivative): a scalar call inside a comprehension, a call with
    // a tensor result and two tensor operands.
    {"rule_scalar", "fn f(x: $T[n], w: $T[n]) -> $T { sum[i](sp(x[i]) * w[i]) + sp(x[0]) }\n"
                    "fn sp(a: $T) -> $T { log(1 + exp(a)) }\n@derivative(sp)\n"
                    "fn sp_vjp(a: $T, g: $T) -> $T { g * sigmoid(a) }"},
    {"rule_tensor", "fn f(A: $T[n, m], v: $T[m]) -> $T { sum(tanh(mv(A, v))) }\n"
                    "fn mv(B: $T[k, j], u: $T[j]) -> $T[k] { B @ u }\n@derivative(mv)\n"
                    "fn mv_vjp(B: $T[k, j], u: $T[j], g: $T[k]) -> ($T[k, j], $T[j]) {\n"
                    "  let dB[a, b] = g[a] * u[b];\n  let du[b] = sum[a](B[a, b] * g[a]);\n"
                    "  (dB, du)\n}"},
};

/// Loops with state: differentiated with a tape (not printable as Slope v1 source yet).
inline const Case kLoopCases[] = {
    {"loop_rnn", "fn f(W: $T[h, h], U: $T[h, d], xs: $T[n, d], h0: $T[h]) -> $T { var s = h0; for "
                 "t in 0..n { s = tanh(W @ s + U @ xs[t]); } sum(s) }"},
    // A write stops the gradient reaching what it overwrote, whatever adjoint reaches it.
    {"var_overwrite_element",
     "fn f(y: $T[n]) -> $T { var w = y; w[0] = 2.0; var e = exp(y); e[n - 1] = y[0]; sum(w) + "
     "sum(2.0 * w) + sum(w + 1.0) + sum[i](e[i]) }"},
    // A triangular solve: the reduction's extent is the loop index.
    {"loop_triangular_solve",
     "fn f(L: $T[n, n], b: $T[n]) -> $T { var y = zeros($T[n]); for j in 0..n { y[j] = (b[j] - "
     "sum[c: j](L[j, c] * y[c])) / (2 + L[j, j]^2); } var s = $T(0); for j in 0..n { for c in "
     "j..n { s = s + y[c] * L[c, j]; } } sum(y^2) + s }"},
    {"var_overwrite_whole", "fn f(y: $T[n]) -> $T { var s = y; s = tanh(y); sum(s) + mean(s) }"},
    {"var_overwrite_in_loop",
     "fn f(y: $T[n]) -> $T { var w = y; for t in 0..n - 1 { w[t] = 2.0; } sum(w) }"},
    // Read before a loop that overwrites it: the loop's reversal must restore it.
    {"var_read_before_loop",
     "fn f(x: $T[n]) -> $T { var w = x; var c = ones($T[n]) * 3.0; let e = sum(w * w * c); for t "
     "in 0..2 { w = w * 0.5; c[t % n] = 1.0; } e + sum(w * c) }"},
    {"loop_scalar_and_elements",
     "fn f(x: $T[n]) -> $T { var acc = 0.0; var out = zeros($T[n]); for i in 0..n { acc = acc * "
     "0.5 + x[i]; out[i] = acc * x[i]; } sum(out) + acc }"},
    {"loop_nested", "fn f(A: $T[n, m]) -> $T { var s = 0.0; for i in 0..n { var r = 1.0; for j in "
                    "0..m { r = r * A[i, j] + s; } s = s + sin(r); } s }"},
    {"loop_in_place", "fn f(x: $T[n]) -> $T { var v = x; for t in 1..n { v[t] = v[t - 1] * 0.5 + "
                      "v[t]; } sum(v^2) }"},
    {"loop_counter_and_if", "fn f(x: $T, y: $T) -> $T { var p = x; var c = 0; for i in 0..4 { p = "
                            "if c % 2 == 0 { p * y } else { sin(p) }; c = c + 1; } p }"},
    {"loop_reads_what_later_code_writes",
     "fn f(x: $T[n]) -> $T { var s = 1.0; for t in 0..n { var r = 0.0; for j in 0..n { r = r + "
     "x[j] * s; } s = s + sin(r); } s }"},
    {"loop_triangular", "fn f(x: $T[n]) -> $T { var s = 1.0; for t in 0..n { var r = 0.0; for j in "
                        "0..t { r = r + x[j] * s; } s = s * 0.9 + sin(r); } s }"},
    {"loop_data_dependent_bounds", "fn f(x: $T[n], k: i64) -> $T { var s = 0.0; for t in 0..k + 1 "
                                   "{ s = s * 0.5 + x[t % n] * x[t % n]; } s }"},
    {"loop_row_writes", "fn f(x: $T[n, m]) -> $T { var M = x; for t in 1..n { M[t] = tanh(M[t - "
                        "1]) + M[t]; } sum(M) }"},
    // Costly values inside loops are taped, not recomputed: nested loops, row writes, a
    // log-sum-exp per step, and a branch that computes one only on some iterations.
    {"loop_stacked_cells",
     "fn f(W: $T[l, m], x: $T[n, m]) -> $T { var h = zeros($T[l, m]); var total = 0.0; for t in "
     "0..n { var inp = x[t]; for i in 0..l { h[i] = tanh(inp * W[i] + h[i]) * sigmoid(h[i] - "
     "inp); inp = h[i]; } total = total + log(sum(exp(inp)) + 1); } total }"},
    // Temporaries declared outside the loop and overwritten before they are read stay off
    // the tape (tmp, u).
    {"loop_temporaries",
     "fn f(x: $T[n]) -> $T { var tmp = zeros($T[n]); var u = 0.0; var s = 0.3; for t in 0..n { "
     "tmp = x * s + 1.0; u = s * x[t]; s = sum(sin(tmp)) * 0.2 + u; } s + u + sum(tmp) }"},
    // acc only ever has terms added: its value is never needed, so it is not taped.
    {"loop_linear_accumulator",
     "fn f(A: $T[n, m], x: $T[n]) -> $T { var acc = zeros($T[m]); var s = 1.0; for t in 0..n { "
     "acc = acc + A[t] * s; s = s * 0.9 + x[t] * x[t]; } sum(acc * acc) + s }"},
    // Trajectories written a row per step: read through (the previous row of the var
    // itself), a copy of only the row a step reads after writing it, undo logs as the state
    // that checkpointing keeps.
    {"loop_trajectory",
     "fn f(W: $T[m, m], xs: $T[n, m], m0: $T[m]) -> $T { var M = zeros($T[n + 1, m]); M[0] = m0; "
     "for t in 1..n + 1 { M[t] = tanh(W @ M[t - 1] + xs[t - 1]); } sum(M * M) }"},
    {"loop_trajectory_own_row",
     "fn f(W: $T[m, m], xs: $T[n, m], s0: $T[m]) -> $T { var s = s0; var M = zeros($T[n, m]); "
     "for t in 0..n { s = sin(W @ s + xs[t]); M[t] = s; M[t] = M[t] * tanh(W @ M[t]); } sum(M) + "
     "sum(s) }"},
    {"loop_costly_branch",
     "fn f(x: $T[n]) -> $T { var s = 0.5; for t in 0..n { s = if x[t] > 0.0 { exp(-s * x[t]) } "
     "else { s + cos(x[t] * s) }; } s }"},
};

/// One test instance: a case in one float type.
struct CaseParam {
  const Case* c;
  const char* dtype;
};
inline void PrintTo(const CaseParam& p, std::ostream* os) {
  *os << p.c->name << "_" << p.dtype;
}

/// Every case in f64 and in f32, for INSTANTIATE_TEST_SUITE_P; with loops unless asked not to.
inline std::vector<CaseParam> allCaseParams(bool loops = true) {
  std::vector<CaseParam> out;
  for (const Case& c : kCases)
    for (const char* t : {"f64", "f32"})
      out.push_back({&c, t});
  if (loops)
    for (const Case& c : kLoopCases)
      for (const char* t : {"f64", "f32"})
        out.push_back({&c, t});
  return out;
}
template <class Info> std::string caseParamName(const Info& i) {
  return std::string(i.param.c->name) + "_" + i.param.dtype;
}

/// The case's source with `$T` replaced by a float type.
inline std::string instantiate(const char* src, const char* t) {
  return std::regex_replace(std::string(src), std::regex("\\$T"), t);
}

} // namespace slope
