// Running deep recursions safely.
//
// The front end, checker and lowering are recursive over the program's structure, and a
// machine-generated file can nest deeply (a sum of 20,000 terms is a left-deep tree 20,000
// levels high; a chain of calls is inlined level by level). Rather than cap the language, the
// pipeline runs those stages on a thread with a large stack: the memory is reserved, and
// only the pages actually used are ever touched.
#pragma once

#include <cstddef>
#include <functional>

namespace slope {

/// Runs fn to completion on a thread with a stack of `bytes`, rethrowing what it throws.
void withLargeStack(const std::function<void()>& fn, size_t bytes = size_t(1) << 30);

} // namespace slope
