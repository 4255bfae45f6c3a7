// The Slope parser (Boost.Spirit X3). See parser.cpp for the grammar.
#pragma once

#include "compiler/parse/ast.hpp"

namespace slope {

/// Parses a whole file. Syntax errors go to diags; after an error the parser skips to the next
/// `fn` at the start of a line and goes on, so one run reports the errors of several functions.
/// Returns the functions that parsed (possibly fewer than the file holds).
ast::Module parseModule(const SourceFile& file, DiagSink& diags);

} // namespace slope
