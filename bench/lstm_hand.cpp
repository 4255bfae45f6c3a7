// The ADBench LSTM loss and its gradient, by hand.
//
// Every product below is elementwise (ADBench's LSTM has no matrix products). One layer's step,
// with input x, hidden state h, cell state s and the layer's weights W_* and biases b_*:
//
//   f = sigmoid(x W_f + b_f)     (forget)      i = sigmoid(h W_i + b_i)     (input)
//   o = sigmoid(x W_o + b_o)     (output)      g = tanh(h W_g + b_g)        (cell change)
//   s' = s f + i g,   u = tanh(s'),   h' = o u,   and h' is the next layer's x.
//
// Step t feeds x_0 = seq_t e_0 to layer 0 and reads the top layer's h' as X; with
// p = X e_1 + e_2, Z = sum_j exp(p_j) + 2 (ADBench's normaliser) and y = seq_{t+1},
//
//   total += sum_j y_j (p_j - log Z),    loss = -total / ((c - 1) b).
//
// Reverse sweep. With k = -1 / ((c - 1) b) and Y = sum_j y_j, the output of step t gives
//
//   dp_j = k (y_j - Y exp(p_j) / Z),   de_1 += dp X,   de_2 += dp,   dX = dp e_1,
//
// which needs nothing from later steps, so the forward sweep computes it and keeps only dX.
// Then, for t from c - 2 down to 0 and each layer from the top down, with dh' the sum of what
// reaches h' from above (dX, or the layer above's dx) and from step t + 1 (carried dh), and
// ds' carried from step t + 1:
//
//   ds' += dh' o (1 - u^2)                     (h' = o tanh(s'))
//   da_o = dh' u o (1 - o)                      (sigmoid' = sigmoid (1 - sigmoid))
//   da_f = ds' s f (1 - f),   da_i = ds' g i (1 - i),   da_g = ds' i (1 - g^2)
//   dW_f += da_f x, db_f += da_f, dW_o += da_o x, db_o += da_o   (the gates fed by x)
//   dW_i += da_i h, db_i += da_i, dW_g += da_g h, db_g += da_g   (the gates fed by h)
//   dx = da_f W_f + da_o W_o        (to the layer below's h', or to de_0 += dx seq_t)
//   dh = da_i W_i + da_g W_g,   ds = ds' f      (carried to step t - 1)
//
// After step 0 the carried dh and ds are the gradient with respect to the initial state.
// The forward sweep of the gradient keeps every step's states and the five activations
// f, i, o, g, u per layer and unit, so the reverse sweep calls no transcendental function.

#include "lstm_hand.hpp"

#include <algorithm>
#include <cmath>

namespace lstm_hand {

namespace {

inline double sigmoid(double a) {
  return 1 / (1 + std::exp(-a));
}

/// One layer's step. w: the layer's main params ([2][4][b]); in, h, s: its input and states;
/// writes the new states to hOut and sOut (which may be h and s) and, when keep is not null,
/// the activations f, i, o, g, tanh(s') to keep[5][b].
inline void cellForward(int64_t b, const double* w, const double* in, const double* h,
                        const double* s, double* hOut, double* sOut, double* keep) {
  const double *wf = w, *wi = w + b, *wo = w + 2 * b, *wg = w + 3 * b;
  const double *bf = w + 4 * b, *bi = w + 5 * b, *bo = w + 6 * b, *bg = w + 7 * b;
  for (int64_t j = 0; j < b; ++j) {
    const double f = sigmoid(in[j] * wf[j] + bf[j]);
    const double i = sigmoid(h[j] * wi[j] + bi[j]);
    const double o = sigmoid(in[j] * wo[j] + bo[j]);
    const double g = std::tanh(h[j] * wg[j] + bg[j]);
    const double s2 = s[j] * f + i * g;
    const double u = std::tanh(s2);
    sOut[j] = s2;
    hOut[j] = o * u;
    if (keep) {
      keep[j] = f;
      keep[b + j] = i;
      keep[2 * b + j] = o;
      keep[3 * b + j] = g;
      keep[4 * b + j] = u;
    }
  }
}

/// One layer's step in reverse (the derivation above). dx holds d loss / d h' from above on
/// entry and d loss / d x on return; dh and ds hold what step t + 1 carried back on entry and
/// what goes to step t - 1 on return; dw ([2][4][b], as w) is added to.
inline void cellBackward(int64_t b, const double* __restrict w, const double* __restrict in,
                         const double* __restrict h, const double* __restrict s,
                         const double* __restrict keep, double* __restrict dw,
                         double* __restrict dx, double* __restrict dh, double* __restrict ds) {
  for (int64_t j = 0; j < b; ++j) {
    const double f = keep[j], i = keep[b + j], o = keep[2 * b + j], g = keep[3 * b + j];
    const double u = keep[4 * b + j];
    const double dhNew = dx[j] + dh[j];
    const double dsNew = ds[j] + dhNew * o * (1 - u * u);
    const double daf = dsNew * s[j] * f * (1 - f);
    const double dai = dsNew * g * i * (1 - i);
    const double dao = dhNew * u * o * (1 - o);
    const double dag = dsNew * i * (1 - g * g);
    dw[j] += daf * in[j];
    dw[b + j] += dai * h[j];
    dw[2 * b + j] += dao * in[j];
    dw[3 * b + j] += dag * h[j];
    dw[4 * b + j] += daf;
    dw[5 * b + j] += dai;
    dw[6 * b + j] += dao;
    dw[7 * b + j] += dag;
    dx[j] = daf * w[j] + dao * w[2 * b + j];
    dh[j] = dai * w[b + j] + dag * w[3 * b + j];
    ds[j] = dsNew * f;
  }
}

/// Step t's term sum_j y_j (p_j - log Z) for the top layer's output top. With dtop not null,
/// also its derivative scaled by k: adds to de1 and de2 and writes dX to dtop.
inline double outputTerm(int64_t b, const double* extra, const double* top, const double* y,
                         double* ey, double k, double* dtop, double* de1, double* de2) {
  const double *e1 = extra + b, *e2 = extra + 2 * b;
  double z = 2, term = 0, ysum = 0;
  for (int64_t j = 0; j < b; ++j) {
    ey[j] = std::exp(top[j] * e1[j] + e2[j]);
    z += ey[j];
  }
  const double logZ = std::log(z);
  for (int64_t j = 0; j < b; ++j) {
    term += y[j] * (top[j] * e1[j] + e2[j] - logZ);
    ysum += y[j];
  }
  if (dtop)
    for (int64_t j = 0; j < b; ++j) {
      const double dp = k * (y[j] - ysum * ey[j] / z);
      de1[j] += dp * top[j];
      de2[j] += dp;
      dtop[j] = dp * e1[j];
    }
  return term;
}

} // namespace

double Lstm::objective(const Problem& p) {
  const int64_t l = p.l, c = p.c, b = p.b;
  hidden_.resize(l * b);
  cell_.resize(l * b);
  x_.resize(b);
  ey_.resize(b);
  for (int64_t i = 0; i < l; ++i)
    for (int64_t j = 0; j < b; ++j) {
      hidden_[i * b + j] = p.state[(2 * i) * b + j];
      cell_[i * b + j] = p.state[(2 * i + 1) * b + j];
    }
  double total = 0;
  for (int64_t t = 0; t + 1 < c; ++t) {
    for (int64_t j = 0; j < b; ++j)
      x_[j] = p.seq[t * b + j] * p.extra[j];
    for (int64_t i = 0; i < l; ++i) {
      double* h = hidden_.data() + i * b;
      const double* in = i == 0 ? x_.data() : h - b;
      cellForward(b, p.main + i * 8 * b, in, h, cell_.data() + i * b, h, cell_.data() + i * b,
                  nullptr);
    }
    total += outputTerm(b, p.extra, hidden_.data() + (l - 1) * b, p.seq + (t + 1) * b, ey_.data(),
                        0, nullptr, nullptr, nullptr);
  }
  return -total / static_cast<double>((c - 1) * b);
}

double Lstm::gradient(const Problem& p, double* dmain, double* dextra, double* dstate) {
  const int64_t l = p.l, c = p.c, b = p.b;
  const int64_t lb = l * b;
  hidden_.resize(c * lb);
  cell_.resize(c * lb);
  gates_.resize((c - 1) * lb * 5);
  dtop_.resize((c - 1) * b);
  x_.resize(b);
  dx_.resize(b);
  ey_.resize(b);
  dh_.assign(lb, 0.0);
  dc_.assign(lb, 0.0);
  std::fill(dmain, dmain + l * 8 * b, 0.0);
  std::fill(dextra, dextra + 3 * b, 0.0);
  for (int64_t i = 0; i < l; ++i)
    for (int64_t j = 0; j < b; ++j) {
      hidden_[i * b + j] = p.state[(2 * i) * b + j];
      cell_[i * b + j] = p.state[(2 * i + 1) * b + j];
    }

  // Forward: step t reads the states at [t] and writes those at [t + 1].
  const double k = -1 / static_cast<double>((c - 1) * b);
  double total = 0;
  for (int64_t t = 0; t + 1 < c; ++t) {
    for (int64_t j = 0; j < b; ++j)
      x_[j] = p.seq[t * b + j] * p.extra[j];
    const double* h = hidden_.data() + t * lb;
    const double* s = cell_.data() + t * lb;
    double* hNext = hidden_.data() + (t + 1) * lb;
    double* sNext = cell_.data() + (t + 1) * lb;
    for (int64_t i = 0; i < l; ++i) {
      const double* in = i == 0 ? x_.data() : hNext + (i - 1) * b;
      cellForward(b, p.main + i * 8 * b, in, h + i * b, s + i * b, hNext + i * b, sNext + i * b,
                  gates_.data() + (t * l + i) * 5 * b);
    }
    total += outputTerm(b, p.extra, hNext + (l - 1) * b, p.seq + (t + 1) * b, ey_.data(), k,
                        dtop_.data() + t * b, dextra + b, dextra + 2 * b);
  }

  // Reverse.
  for (int64_t t = c - 2; t >= 0; --t) {
    std::copy(dtop_.data() + t * b, dtop_.data() + (t + 1) * b, dx_.data());
    for (int64_t j = 0; j < b; ++j)
      x_[j] = p.seq[t * b + j] * p.extra[j];
    for (int64_t i = l - 1; i >= 0; --i) {
      const double* in = i == 0 ? x_.data() : hidden_.data() + (t + 1) * lb + (i - 1) * b;
      cellBackward(b, p.main + i * 8 * b, in, hidden_.data() + t * lb + i * b,
                   cell_.data() + t * lb + i * b, gates_.data() + (t * l + i) * 5 * b,
                   dmain + i * 8 * b, dx_.data(), dh_.data() + i * b, dc_.data() + i * b);
    }
    for (int64_t j = 0; j < b; ++j)
      dextra[j] += dx_[j] * p.seq[t * b + j];
  }
  if (dstate)
    for (int64_t i = 0; i < l; ++i)
      for (int64_t j = 0; j < b; ++j) {
        dstate[(2 * i) * b + j] = dh_[i * b + j];
        dstate[(2 * i + 1) * b + j] = dc_[i * b + j];
      }
  return -total / static_cast<double>((c - 1) * b);
}

} // namespace lstm_hand
