// Work that does not depend on a comprehension's last index, taken out of it (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// A comprehension whose elements are the entries of a small vector computed per point, as
/// `let r[i: p] = w[i] * (project(cams[obs[i, 0]], X[obs[i, 1]]) - feats[i])` with a
/// 2-vector body, is one loop nest over (i, t) whose body computes the whole vector and keeps
/// entry t: Tensor IR's bodies are scalar, so every entry recomputes the vector (bundle
/// adjustment's projection ran twice per observation, its JVPs too). This pass splits such a
/// parallel loop (a comprehension's, or a loop of stores such as forward mode's value and
/// tangent together) at its last index when that index has a constant extent: the statements
/// that do not depend on it (P, in their order) run once per outer iteration, the others (S,
/// in theirs) in a loop over it,
///
///     parallel for i < p, t < 2 { P; S }   =>   parallel for i < p { P; parallel for t < 2 { S } }
///
/// Every result keeps its bits. Conditions: P writes only memory it allocates itself, and S
/// writes nothing P reads or writes (a buffer S writes is S's from its allocation on: a
/// zeroed accumulator allocated once per outer iteration would carry one entry's additions
/// into the next); a statement of P that came after statements of S writes nothing they
/// touched and cannot fail where they could have failed first (the error reported stays the
/// one reported before); the extent is a positive constant (P ran at least once per outer
/// iteration before too, so nothing in it fails that did not fail before). Only where P holds
/// real work (a loop, a branch, a costly operation or at least kMinScalars statements).
/// Returns how many loops it split.
int splitInvariantPrefix(Function& f);

} // namespace slope::lower
