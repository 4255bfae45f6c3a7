// Workspace planning (a Loop IR pass): which workspace entry holds each temporary.
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// Gives every temporary buffer (Buffer::Temp) its workspace entry (Buffer::entry) and sets
/// Function::entries. A backend keeps one buffer per entry from call to call
/// (docs/architecture.md, "Workspaces"). Temporaries made at the top level of the function
/// whose lives do not overlap share an entry: a buffer is live from its allocation to the
/// last top-level statement that mentions it (at any depth inside it), or to the end when
/// it is returned. A temporary made inside a loop or branch has an entry of its own, kept
/// across iterations.
void planWorkspace(Function& f);

} // namespace slope::lower
