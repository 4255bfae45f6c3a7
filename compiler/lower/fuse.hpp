// Producer-consumer fusion of loop nests, and the buffer between them made a scalar (a Loop IR
// pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// A temporary written by one top-level loop nest, element by element, and read by a later
/// one at the same element (reverse mode's adjoint of an intermediate tensor: zeroed, added to
/// once per element by one nest, read by the next) is memory traffic for nothing: the two
/// nests are fused, level by level, until the write and the reads are in one loop body, and
/// the reads then take the written value (0 + v for an addition into zeroed memory: the same
/// bits) instead of the buffer, which goes away. The ADBench GMM gradient loses two buffers of
/// n K d doubles this way.
///
/// A comprehension's buffer read by one later nest only is fused with it too; when each
/// iteration of the fused loop then writes and reads its own slice of the buffer only, the
/// buffer becomes that slice, allocated in the loop (the GMM objective's qx: n K d doubles
/// become a row of d).
///
/// A comprehension's buffer that later nests read again (a tape: the GMM gradient's qx, which
/// the sums of its squares read and the adjoint reads later) stays, but its first reader is
/// fused with the writer where each iteration then reads only the slice it wrote: the reads
/// find it in cache instead of memory.
///
/// Fusion keeps every buffer's element-by-element order of accesses, so every result keeps
/// its bits; fuse.cpp says when that holds. Nothing is fused unless the buffer goes away,
/// shrinks or is read in cache, and nothing whose SIMD math functions (exp, log, ...) would
/// lose their lanes.
/// Returns how many buffers went away or shrank.
int fuseProducers(Function& f);

/// Neighbouring straight parallel vector loops over the same extents, in any body, become one
/// loop that runs the first's iteration i and then the second's, under fuseProducers' rule,
/// so every buffer keeps its element-by-element order of accesses and every result its bits.
/// The LSTM cell's seven loops over the batch per layer and step become five: a fused loop
/// keeps at most one math function call, and what it does with what it wrote earlier in the
/// same iteration is limited to what LLVM keeps in order (fuse.cpp, storedReads). With
/// bounds.cpp, the LSTM gradient's reversal of a layer is four loops where it was nine (and
/// seven cold copies). Fewer loops give LLVM fewer vector bodies, remainders and set-ups to
/// make (compile time) and the calls fewer passes over the rows (run time). No buffer goes
/// away. Returns how many loops were fused into another.
int fuseSiblings(Function& f);

} // namespace slope::lower
