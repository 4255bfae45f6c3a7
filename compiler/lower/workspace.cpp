// Workspace planning: liveness over the top-level statements, then a greedy assignment of
// entries in allocation order (an entry freed most recently is taken first: its memory is the
// most likely to be in cache).

#include "compiler/lower/workspace.hpp"

#include <functional>
#include <vector>

namespace slope::lower {
namespace {

/// Every value s mentions, nested statements included: arguments, yields, the buffer a store
/// writes, and the result of a statement that writes into a buffer allocated before it (an
/// if's tensor result).
void mentions(const Stmt& s, const std::function<void(int)>& use) {
  for (int a : s.in.args)
    use(a);
  if (s.kind != Stmt::Alloc && s.kind != Stmt::Stack && s.in.result >= 0) use(s.in.result);
  if (s.yield >= 0) use(s.yield);
  if (s.elseYield >= 0) use(s.elseYield);
  if (s.buffer >= 0) use(s.buffer);
  for (const Body* b : {&s.tileHead, &s.body, &s.orelse, &s.tileTail})
    for (const Stmt& t : *b)
      mentions(t, use);
  if (s.tileFirst >= 0) use(s.tileFirst), use(s.tileEnd);
}

bool allocates(const Stmt& s) {
  return s.kind == Stmt::Alloc || s.kind == Stmt::Stack;
}

} // namespace

void planWorkspace(Function& f) {
  const int n = static_cast<int>(f.body.size());
  auto isTemp = [&](int v) {
    auto b = f.buffers.find(v);
    return b != f.buffers.end() && b->second.place == Buffer::Temp;
  };
  // The last top-level statement that mentions each value (n: returned).
  std::map<int, int> last;
  for (int k = 0; k < n; ++k)
    mentions(f.body[k], [&](int v) { last[v] = k; });
  for (int y : f.src.body.yields)
    last[y] = n;
  // Top-level temporaries in allocation order; each frees its entry after its last mention.
  std::map<int, std::vector<int>> freedAfter; // statement -> entries free after it
  std::vector<int> free;
  int entries = 0;
  for (int k = 0; k < n; ++k) {
    const Stmt& s = f.body[k];
    if (allocates(s) && isTemp(s.in.result)) {
      Buffer& b = f.buffers[s.in.result];
      if (free.empty()) {
        b.entry = entries++;
      } else {
        b.entry = free.back();
        free.pop_back();
      }
      auto l = last.find(s.in.result);
      freedAfter[l == last.end() ? k : l->second].push_back(b.entry);
    }
    auto done = freedAfter.find(k);
    if (done != freedAfter.end())
      for (int e : done->second)
        free.push_back(e);
  }
  // Temporaries inside loops and branches: one entry each.
  forEachStmt(f.body, [&](const Stmt& s) {
    if (allocates(s) && isTemp(s.in.result) && f.buffers[s.in.result].entry < 0)
      f.buffers[s.in.result].entry = entries++;
  });
  f.entries = entries;
}

} // namespace slope::lower
