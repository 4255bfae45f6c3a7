// Reading ADBench hand-tracking files and running samples/adbench/hand.slope on them.
//
// The model is a folder (ADBench's model/): bones.txt, a line per bone `name:parent:` then its
// rest transform relative to the parent and the inverse of its absolute rest transform (16
// numbers each, row-major); vertices.txt, a line per vertex `x:y:z:` then 5 numbers this
// objective does not use (normal, texture coordinates), then `n:` and n pairs `bone:weight`;
// triangles.txt, `a:b:c` per triangle. The input file: `N n_theta`, N lines `vertex x y z`
// (the correspondence and the point), for the complicated variant N lines `u v`, then theta.
#pragma once

#include <slope/slope.hpp>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace adbench {

struct HandModel {
  int64_t B = 0, V = 0, T = 0;
  std::vector<int64_t> parents;                          // B
  std::vector<double> baseRelative, inverseBaseAbsolute; // B x 4 x 4
  std::vector<double> basePositions;                     // V x 4 (homogeneous)
  std::vector<double> weights;                           // B x V
  std::vector<int64_t> triangles;                        // T x 3
};

struct HandInput {
  HandModel model;
  int64_t N = 0;
  std::vector<int64_t> correspondences; // N
  std::vector<double> points, us;       // N x 3, N x 2 (complicated only)
  std::vector<double> theta;            // 26
};

inline std::vector<std::string> splitColons(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string item;
  while (std::getline(ss, item, ':'))
    out.push_back(item);
  return out;
}

inline HandModel readHandModel(const std::string& dir) {
  HandModel m;
  auto open = [&](const std::string& name) {
    std::ifstream in(dir + "/" + name);
    if (!in) throw std::runtime_error(dir + "/" + name + ": cannot open");
    return in;
  };
  std::string line;
  {
    std::ifstream in = open("bones.txt");
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto f = splitColons(line);
      if (f.size() < 34) throw std::runtime_error(dir + "/bones.txt: a bone needs 34 fields");
      m.parents.push_back(std::stoll(f[1]));
      for (int k = 0; k < 16; ++k)
        m.baseRelative.push_back(std::stod(f[2 + k]));
      for (int k = 0; k < 16; ++k)
        m.inverseBaseAbsolute.push_back(std::stod(f[18 + k]));
    }
    m.B = static_cast<int64_t>(m.parents.size());
  }
  std::vector<std::vector<std::pair<int64_t, double>>> skin;
  {
    std::ifstream in = open("vertices.txt");
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto f = splitColons(line);
      if (f.size() < 9) throw std::runtime_error(dir + "/vertices.txt: a vertex needs 9 fields");
      for (int k = 0; k < 3; ++k)
        m.basePositions.push_back(std::stod(f[k]));
      m.basePositions.push_back(1.0);
      size_t n = std::stoul(f[8]);
      if (f.size() < 9 + 2 * n) throw std::runtime_error(dir + "/vertices.txt: missing weights");
      skin.emplace_back();
      for (size_t k = 0; k < n; ++k)
        skin.back().push_back({std::stoll(f[9 + 2 * k]), std::stod(f[10 + 2 * k])});
    }
    m.V = static_cast<int64_t>(skin.size());
  }
  m.weights.assign(static_cast<size_t>(m.B * m.V), 0.0);
  for (int64_t v = 0; v < m.V; ++v)
    for (auto [b, w] : skin[static_cast<size_t>(v)]) {
      if (b < 0 || b >= m.B) throw std::runtime_error(dir + "/vertices.txt: bad bone index");
      m.weights[static_cast<size_t>(b * m.V + v)] = w;
    }
  {
    std::ifstream in = open("triangles.txt");
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      for (const auto& f : splitColons(line))
        m.triangles.push_back(std::stoll(f));
    }
    m.T = static_cast<int64_t>(m.triangles.size() / 3);
  }
  return m;
}

inline HandInput readHand(const std::string& modelDir, const std::string& path, bool complicated) {
  HandInput h;
  h.model = readHandModel(modelDir);
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  int64_t nTheta = 0;
  in >> h.N >> nTheta;
  if (!in || h.N < 1 || nTheta != 26) throw std::runtime_error(path + ": bad header");
  for (int64_t i = 0; i < h.N; ++i) {
    int64_t c;
    double x, y, z;
    in >> c >> x >> y >> z;
    h.correspondences.push_back(c);
    h.points.insert(h.points.end(), {x, y, z});
  }
  if (complicated)
    for (int64_t i = 0; i < 2 * h.N; ++i) {
      double u;
      in >> u;
      h.us.push_back(u);
    }
  h.theta.resize(26);
  for (double& t : h.theta)
    in >> t;
  if (!in) throw std::runtime_error(path + ": file ends early");
  return h;
}

/// The arguments of hand (simple) or hand_complicated, as views of h's arrays.
inline std::vector<slope::Arg> handArgs(const HandInput& h, bool complicated) {
  const HandModel& m = h.model;
  std::vector<slope::Arg> a = {slope::View(h.theta.data(), {26})};
  if (complicated) a.push_back(slope::View(h.us.data(), {h.N, 2}));
  a.insert(a.end(),
           {slope::View(m.parents.data(), {m.B}), slope::View(m.baseRelative.data(), {m.B, 4, 4}),
            slope::View(m.inverseBaseAbsolute.data(), {m.B, 4, 4}),
            slope::View(m.basePositions.data(), {m.V, 4}),
            slope::View(m.weights.data(), {m.B, m.V})});
  if (complicated) a.push_back(slope::View(m.triangles.data(), {m.T, 3}));
  a.insert(a.end(),
           {slope::View(h.correspondences.data(), {h.N}), slope::View(h.points.data(), {h.N, 3})});
  return a;
}

} // namespace adbench
