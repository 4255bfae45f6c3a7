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

#include <map>
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

/// Constant seeds for a JVP: for a differentiated parameter, the lane (direction) each of its
/// elements is 1 in, the other lanes 0. One entry: every element seeds that lane (a scalar, or
/// a whole tensor of one colour); L entries, for a parameter whose last extent is the literal
/// L: element [..., k] seeds lane seeds[k]. -1: no lane (the element is held fixed).
using Seeds = std::map<std::string, std::vector<int>>;

/// The JVP of f with the tangents fixed at compile time (`NAME_jvp_seededK`): a sparse
/// Jacobian's colouring, when each colour depends on the column's parameter and last index
/// only (bundle adjustment's cameras and points, any vector parameter). Parameters: f's only;
/// results: jvp()'s with batch K (K >= 1, every seed below K). Every parameter in wrt needs an
/// entry in seeds. The seeds are constants in the code, so a lane that is 0 costs nothing: an
/// operation whose operands' tangents are structurally 0 in a lane adds nothing to it (where
/// a partial is not finite, that lane is 0, not NaN: the convention of JAX's symbolic zeros).
ir::Function jvpSeeded(const ir::Function& f, const std::vector<std::string>& wrt, int batch,
                       const Seeds& seeds);

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
