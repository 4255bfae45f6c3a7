// Forward mode as an IR-to-IR pass: Jacobian-vector products, and Hessian-vector products
// as forward mode over the gradient.
//
// The tangent code runs beside the forward code, in the same order, so loops with state need
// no tape: each var that carries an active value gets a tangent var, written where the var is
// written. A region (comprehension, reduction, `if` with a result) keeps its forward form and
// gains a second region that recomputes the body and yields the body's tangent.
//
// The elementwise rules are the reverse-mode rule table (rules.hpp), read a second way. Each
// adjoint rule is linear in the result's adjoint g: it adds g * dy/dx_k to operand k's adjoint.
// Run with g = 1, it yields the partials dy/dx_k, and the tangent is sum_k dy/dx_k * dx_k. So a
// rule is written once and both modes use it; a test checks <u, J v> = <J^T u, v>.
//
// With a batch, one call carries K tangents (the columns of a Jacobian, the colours of a
// sparse one): the value and each partial are computed once and applied to every lane.
#pragma once

#include "compiler/ir/ir.hpp"

#include <string>
#include <vector>

namespace slope {

/// The JVP of f (`NAME_jvp`) with respect to the float parameters named in wrt (all of them
/// when empty; resolveWrt() validates).
///   parameters: f's parameters, then one tangent per differentiated parameter, of its type
///               (named tangentName(param));
///   results:    f's results, then the tangent of each float result, in order.
/// With batch K > 0 (`NAME_jvp_batchK`), K tangents in one call: each tangent parameter and
/// result has its value's shape ++ [K], direction j at [..., j] (for x: f64[n], the columns
/// of V: f64[n, K]; the result's tangent is J V). The value is computed once, each elementwise
/// partial once, then applied to every lane (a Jacobian's columns, a sparse Jacobian's
/// colours, K at a time).
ir::Function jvp(const ir::Function& f, const std::vector<std::string>& wrt, int batch = 0);

/// The Hessian-vector product of a scalar function (`NAME_hvp`), from its gradient function
/// `grad` (differentiate()'s `NAME_grad` for the same wrt): forward mode over reverse mode.
///   parameters: f's parameters, then one direction v per differentiated parameter;
///   results:    the value, the gradient per parameter, then H v per parameter (the rows of the
///               Hessian for that parameter times the whole direction).
/// With batch K > 0 (`NAME_hvp_batchK`), K directions at once, shaped as jvp()'s.
ir::Function hvp(const ir::Function& grad, const std::vector<std::string>& wrt, int batch = 0);

/// The name of the tangent parameter for `param` in f: `param_dot`, with more underscores
/// until it names no parameter of f.
std::string tangentName(const ir::Function& f, const std::string& param);

} // namespace slope
