// Reading ADBench bundle-adjustment files and running samples/adbench/ba.slope on them.
//
// File format (ADBench docs/FileFormat.md): `n m p`, then one camera (11 numbers), one point
// (3), one weight and one feature (2). ADBench's reader replicates them: every camera, point,
// weight and feature is the same, and observation i sees point i mod m from camera i mod n.
#pragma once

#include <slope/slope.hpp>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace adbench {

struct BaInput {
  int64_t n = 0, m = 0, p = 0;
  std::vector<double> cams, X, w, feats; // n x 11, m x 3, p, p x 2
  std::vector<int64_t> obs;              // p x 2: camera, point
};

inline BaInput readBa(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  BaInput b;
  in >> b.n >> b.m >> b.p;
  if (!in || b.n < 1 || b.m < 1 || b.p < 1) throw std::runtime_error(path + ": bad header");
  double cam[11], X[3], w, feat[2];
  for (double& v : cam)
    in >> v;
  for (double& v : X)
    in >> v;
  in >> w >> feat[0] >> feat[1];
  if (!in) throw std::runtime_error(path + ": file ends early");
  for (int64_t i = 0; i < b.n; ++i)
    b.cams.insert(b.cams.end(), cam, cam + 11);
  for (int64_t i = 0; i < b.m; ++i)
    b.X.insert(b.X.end(), X, X + 3);
  b.w.assign(static_cast<size_t>(b.p), w);
  for (int64_t i = 0; i < b.p; ++i) {
    b.feats.insert(b.feats.end(), feat, feat + 2);
    b.obs.push_back(i % b.n);
    b.obs.push_back(i % b.m);
  }
  return b;
}

/// The arguments of ba(cams, X, w, feats, obs), as views of b's arrays.
inline std::vector<slope::Arg> baArgs(const BaInput& b) {
  return {slope::View(b.cams.data(), {b.n, 11}), slope::View(b.X.data(), {b.m, 3}),
          slope::View(b.w.data(), {b.p}), slope::View(b.feats.data(), {b.p, 2}),
          slope::View(b.obs.data(), {b.p, 2})};
}

struct BaResult {
  std::vector<double> reproj, werr; // p x 2, p
};

inline BaResult runBa(const slope::Module& m, const BaInput& b) {
  slope::Result r = m.function("ba").call(baArgs(b));
  BaResult out;
  const double* e = static_cast<const double*>(r[0].raw());
  const double* we = static_cast<const double*>(r[1].raw());
  out.reproj.assign(e, e + 2 * b.p);
  out.werr.assign(we, we + b.p);
  return out;
}

} // namespace adbench
