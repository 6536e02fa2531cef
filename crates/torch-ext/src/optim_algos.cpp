// The optimizers besides AdamW and SGD (optim.cpp): timm 1.0's Lamb, Lion, Adafactor, Adafactor
// (Big Vision), ADOPT, NAdamW and Muon / AdaMuon, as their single-tensor paths compute them
// (Lion and NAdamW with the same ops as foreach ops: a few kernels per group, not per tensor,
// the same values), and torch.optim.NAdam (decoupled) through the foreach ops torch's
// multi-tensor path uses. Written against ATen so every op takes its scalars (alpha, value,
// beta) exactly as the Python does.
//
// Two things differ from the Python on purpose, both so that the host never waits on the
// device:
// - The step count is one f32 scalar on the parameters' device (the caller increments it, by 0
//   on a skipped step), and everything that depends on it (bias corrections, Adafactor's beta2
//   schedule, ADOPT's first step and clip value, NAdam's momentum schedule) is computed from it
//   on the device, in f64, then used as torch uses a Python float.
// - `found_inf` (nullable, f32 scalar): when it is non-zero the step leaves every parameter and
//   state as it was. Without it, updates run in place; with it, they run on copies that are
//   written back with torch.where (`Skip`).
#include "guard.h"
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

typedef at::Tensor *tensor;

// Arguments every optimizer shares: `n` parameters, each with its learning rate (the schedule's
// times its group's scale) and weight decay, the step count and the skip flag.
struct StepCommon {
  tensor *params;
  int n;
  const double *lr;
  const double *wd;
  tensor step;
  tensor found_inf;
};

namespace {

using at::Tensor;

// A step skipped on the device: see the file comment.
class Skip {
 public:
  explicit Skip(tensor found_inf) {
    if (found_inf != nullptr) cond_ = found_inf->ne(0);
  }
  // The skip condition widened by `also` (a bool scalar): ADOPT's first step, which leaves the
  // parameter and its first moment alone.
  Skip widened(const Tensor &also) const {
    Skip s(nullptr);
    s.cond_ = cond_ ? at::logical_or(*cond_, also) : also;
    return s;
  }
  bool active() const { return cond_.has_value(); }
  // The tensor an update writes: `t` itself, or a copy while a skip is possible.
  Tensor work(const Tensor &t) const { return cond_ ? t.clone() : t; }
  // Writes the updated copy `w` back into `t` unless the step is skipped.
  void commit(const Tensor &t, const Tensor &w) const {
    if (!cond_) return;
    Tensor out = t;
    at::where_out(out, *cond_, t, w);
  }

 private:
  std::optional<Tensor> cond_;
};

// The indices of `params` with a gradient (timm skips `p.grad is None`).
std::vector<int> with_grad(tensor *params, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; i++)
    if (params[i]->grad().defined()) out.push_back(i);
  return out;
}

// 1 - base^s for the f64 step count `s`.
Tensor one_minus_pow(double base, const Tensor &s) { return at::rsub(at::pow(base, s), 1.0); }

// A device scalar in `t`'s dtype (for ops that take a tensor operand of the same dtype).
Tensor as(const Tensor &scalar, const Tensor &t) { return scalar.to(t.scalar_type()); }

// `param.add_(update, alpha=scale)` with the scale a device scalar.
void add_scaled(Tensor &p, const Tensor &update, const Tensor &scale) {
  p.add_(update * as(scale, update));
}

// timm's _lamb_trust_ratio: ‖w‖ / ‖g‖, or 1 where either norm is 0; clipped at 1 for LAMBC.
Tensor trust_ratio(const Tensor &w_norm, const Tensor &g_norm, bool trust_clip) {
  Tensor r = at::where(w_norm > 0, at::where(g_norm > 0, w_norm / g_norm, 1.0), 1.0);
  return trust_clip ? r.clamp_max(1.0) : r;
}

// RMS of `t` (Adafactor's _rms): ‖t‖ / √numel.
Tensor rms(const Tensor &t) {
  return at::linalg_vector_norm(t, 2) / std::sqrt(static_cast<double>(t.numel()));
}

// Parameters `idx` grouped by equal (learning rate, weight decay, dtype), in first-seen order:
// a foreach op takes a uniform list and one scalar. While a skip is possible the group's
// parameters and states are copied (see Skip), so groups are cut into chunks of at most 2^26
// elements: the copies stay a bounded amount of memory, not another model's worth.
std::vector<std::vector<int>> foreach_groups(const StepCommon *c, const std::vector<int> &idx,
                                             const Skip &skip) {
  const int64_t limit = skip.active() ? (int64_t{1} << 26) : INT64_MAX;
  std::vector<std::vector<int>> groups;
  std::vector<int64_t> sizes;
  for (int i : idx) {
    int64_t n = c->params[i]->numel();
    auto same = [&](size_t k) {
      int j = groups[k].front();
      return c->lr[j] == c->lr[i] && c->wd[j] == c->wd[i] &&
             c->params[j]->scalar_type() == c->params[i]->scalar_type() &&
             sizes[k] + n <= std::max(limit, n);
    };
    size_t k = 0;
    while (k < groups.size() && !same(k)) ++k;
    if (k == groups.size()) {
      groups.push_back({i});
      sizes.push_back(n);
    } else {
      groups[k].push_back(i);
      sizes[k] += n;
    }
  }
  return groups;
}

// One foreach group's tensors: the parameters (or their copies while a skip is possible), their
// gradients, and each state's tensors (or copies), in the group's order.
struct Lists {
  std::vector<Tensor> params, grads;
  std::vector<std::vector<Tensor>> states;

  Lists(const StepCommon *c, const std::vector<int> &g, const Skip &skip,
        std::initializer_list<tensor *> state_arrays) {
    for (int i : g) {
      params.push_back(skip.work(*c->params[i]));
      grads.push_back(c->params[i]->grad());
    }
    for (tensor *a : state_arrays) {
      std::vector<Tensor> st;
      for (int i : g) st.push_back(skip.work(*a[i]));
      states.push_back(st);
    }
  }

  // Writes the copies back (see Skip::commit).
  void commit(const StepCommon *c, const std::vector<int> &g, const Skip &skip,
              std::initializer_list<tensor *> state_arrays) const {
    for (size_t k = 0; k < g.size(); k++) skip.commit(*c->params[g[k]], params[k]);
    size_t s = 0;
    for (tensor *a : state_arrays) {
      for (size_t k = 0; k < g.size(); k++) skip.commit(*a[g[k]], states[s][k]);
      s++;
    }
  }
};

}  // namespace

extern "C" {

struct LambHyper {
  double beta1, beta2, eps;
  double max_grad_norm;  // < 0: None (no global clipping)
  int bias_correction, grad_averaging, trust_clip, always_adapt, decoupled;
};

// timm Lamb (lamb / lambw): _get_clip_grad_norm over every gradient, then _single_tensor_lamb.
char *torch_ext_lamb(const StepCommon *c, tensor *exp_avg, tensor *exp_avg_sq,
                     const LambHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    auto idx = with_grad(c->params, c->n);
    if (idx.empty()) return nullptr;
    std::optional<Tensor> clip;
    if (h->max_grad_norm >= 0) {
      std::vector<Tensor> grads;
      for (int i : idx) grads.push_back(c->params[i]->grad());
      auto norms = at::_foreach_norm(grads, 2);
      Tensor global = at::linalg_vector_norm(at::stack(norms), 2);
      clip = (global / h->max_grad_norm).clamp_min_(1.0);
    }
    Tensor s = c->step->to(at::kDouble);
    Tensor bc1 = h->bias_correction ? one_minus_pow(h->beta1, s) : at::ones_like(s);
    Tensor bc2_sqrt = h->bias_correction ? one_minus_pow(h->beta2, s).sqrt() : at::ones_like(s);
    double beta3 = h->grad_averaging ? 1 - h->beta1 : 1.0;
    for (int i : idx) {
      Tensor p = skip.work(*c->params[i]), m = skip.work(*exp_avg[i]),
             v = skip.work(*exp_avg_sq[i]);
      Tensor grad = c->params[i]->grad();
      if (clip) grad = grad / *clip;
      if (beta3 == 1 - h->beta1)
        m.lerp_(grad, beta3);
      else
        m.mul_(h->beta1).add_(grad, beta3);
      v.mul_(h->beta2).addcmul_(grad, grad, 1 - h->beta2);
      Tensor denom = (v.sqrt() / bc2_sqrt).add_(h->eps);
      Tensor update = (m / bc1).div_(denom);
      double lr = c->lr[i], wd = c->wd[i];
      if (wd != 0) {
        if (h->decoupled)
          p.add_(p, -lr * wd);
        else
          update.add_(p, wd);
      }
      if (wd != 0 || h->always_adapt) {
        update.mul_(trust_ratio(at::linalg_vector_norm(p, 2), at::linalg_vector_norm(update, 2),
                                h->trust_clip != 0));
      }
      p.add_(update, -lr);
      skip.commit(*c->params[i], p);
      skip.commit(*exp_avg[i], m);
      skip.commit(*exp_avg_sq[i], v);
    }
  })
}

struct LionHyper {
  double beta1, beta2;
};

// timm Lion: _single_tensor_lion's ops as foreach ops, one pass per (lr, wd, dtype) group.
char *torch_ext_lion(const StepCommon *c, tensor *exp_avg, const LionHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    for (const auto &g : foreach_groups(c, with_grad(c->params, c->n), skip)) {
      Lists l(c, g, skip, {exp_avg});
      auto &ms = l.states[0];
      double lr = c->lr[g[0]];
      at::_foreach_mul_(l.params, 1 - lr * c->wd[g[0]]);
      auto update = at::_foreach_lerp(ms, l.grads, 1 - h->beta1);
      at::_foreach_sign_(update);
      at::_foreach_add_(l.params, update, -lr);
      at::_foreach_lerp_(ms, l.grads, 1 - h->beta2);
      l.commit(c, g, skip, {exp_avg});
    }
  })
}

struct AdafactorHyper {
  double eps, clip_threshold, decay_rate;
  double beta1;  // < 0: None (no first moment)
};

// timm Adafactor with an external learning rate (relative_step off), its step per parameter.
// `dims[2i], dims[2i+1]`: (dim_col, dim_row) of a factored second moment, or -1: its
// exp_avg_sq. State in f32 (bf16 parameters are updated in f32 and copied back), exp_avg only
// with beta1.
char *torch_ext_adafactor(const StepCommon *c, tensor *exp_avg, tensor *exp_avg_sq,
                          tensor *row, tensor *col, const int *dims, const AdafactorHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    Tensor s = c->step->to(at::kDouble);
    // Python's 1.0 - beta2t with beta2t = 1.0 - step ** decay_rate.
    Tensor weight = at::rsub(at::rsub(at::pow(s, h->decay_rate), 1.0), 1.0).to(at::kFloat);
    for (int i : with_grad(c->params, c->n)) {
      Tensor param = *c->params[i];
      Tensor grad = c->params[i]->grad().to(at::kFloat);
      bool low = param.scalar_type() != at::kFloat;
      Tensor p = low ? param.to(at::kFloat) : skip.work(param);
      double lr = c->lr[i];
      Tensor update = grad.square() + h->eps;
      int dc = dims[2 * i], dr = dims[2 * i + 1];
      Tensor r, cl, v, m;
      if (dc >= 0) {
        r = skip.work(*row[i]);
        cl = skip.work(*col[i]);
        r.lerp_(update.mean(dr), weight);
        cl.lerp_(update.mean(dc), weight);
        Tensor r_factor = (r / r.mean(dc, true)).rsqrt_().unsqueeze(dr);
        Tensor c_factor = cl.unsqueeze(dc).rsqrt();
        update = at::mul(r_factor, c_factor);
        update.mul_(grad);
      } else {
        v = skip.work(*exp_avg_sq[i]);
        v.lerp_(update, weight);
        update = v.rsqrt().mul_(grad);
      }
      update.div_((rms(update) / h->clip_threshold).clamp_min_(1.0));
      update.mul_(lr);
      if (h->beta1 >= 0) {
        m = skip.work(*exp_avg[i]);
        m.lerp_(update, 1 - h->beta1);
        update = m;
      }
      if (c->wd[i] != 0) p.add_(p, -c->wd[i] * lr);
      p.add_(-update);
      if (low) {
        Tensor back = skip.work(param);
        back.copy_(p);
        skip.commit(param, back);
      } else {
        skip.commit(param, p);
      }
      if (dc >= 0) {
        skip.commit(*row[i], r);
        skip.commit(*col[i], cl);
      } else {
        skip.commit(*exp_avg_sq[i], v);
      }
      if (h->beta1 >= 0) skip.commit(*exp_avg[i], m);
    }
  })
}

struct AdafactorBvHyper {
  double decay_rate, beta2_cap;
  double momentum;            // < 0: None
  double eps;                 // < 0: None (1e-30, or 1e-7 for fp16 gradients)
  double clipping_threshold;  // < 0: None
  int decay_offset, unscaled_wd;
};

// timm AdafactorBigVision: _single_tensor_adafactor. `dims[2i], dims[2i+1]`: (dc, dr) of a
// factored second moment (exp_avg_sq_r / _c keep every dimension), or -1: its exp_avg_sq.
// exp_avg (momentum) in its own dtype.
char *torch_ext_adafactor_bv(const StepCommon *c, tensor *exp_avg, tensor *exp_avg_sq,
                             tensor *row, tensor *col, const int *dims,
                             const AdafactorBvHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    Tensor s = c->step->to(at::kDouble);
    Tensor decay_step = h->decay_offset ? (s - h->decay_offset).clamp_min(1.0) : s;
    Tensor beta2_t = at::clamp_max(at::rsub(at::pow(decay_step, -h->decay_rate), 1.0), h->beta2_cap);
    Tensor one_minus = at::rsub(beta2_t, 1.0);
    for (int i : with_grad(c->params, c->n)) {
      const Tensor &grad = c->params[i]->grad();
      Tensor p = skip.work(*c->params[i]);
      double eps = h->eps >= 0 ? h->eps : (grad.scalar_type() == at::kHalf ? 1e-7 : 1e-30);
      Tensor weight = as(one_minus, grad);
      Tensor grad_sqr = at::square(grad) + eps;
      int dc = dims[2 * i], dr = dims[2 * i + 1];
      Tensor r, cl, v, m, update;
      if (dc >= 0) {
        r = skip.work(*row[i]);
        cl = skip.work(*col[i]);
        r.lerp_(grad_sqr.mean(dr, true), weight);
        cl.lerp_(grad_sqr.mean(dc, true), weight);
        Tensor row_col_mean = r.mean(dc, true);
        Tensor row_factor = (r / row_col_mean).rsqrt();
        Tensor col_factor = cl.rsqrt();
        update = grad * row_factor * col_factor;
      } else {
        v = skip.work(*exp_avg_sq[i]);
        v.lerp_(grad_sqr, weight);
        update = grad * v.rsqrt();
      }
      if (h->clipping_threshold >= 0)
        update.div_((rms(update) / h->clipping_threshold).clamp_min_(1.0));
      if (h->momentum >= 0) {
        m = skip.work(*exp_avg[i]);
        if (m.scalar_type() != grad.scalar_type()) {
          m.lerp_(update.to(m.scalar_type()), 1 - h->momentum);
          update = m.to(grad.scalar_type());
        } else {
          m.lerp_(update, 1 - h->momentum);
          update = m.clone();
        }
      }
      double lr = c->lr[i], wd = c->wd[i];
      update.mul_(lr);
      if (wd != 0) p.mul_(h->unscaled_wd ? 1. - wd : 1. - lr * wd);
      p.add_(update, -1.0);
      skip.commit(*c->params[i], p);
      if (dc >= 0) {
        skip.commit(*row[i], r);
        skip.commit(*col[i], cl);
      } else {
        skip.commit(*exp_avg_sq[i], v);
      }
      if (h->momentum >= 0) skip.commit(*exp_avg[i], m);
    }
  })
}

struct AdoptHyper {
  double beta1, beta2, eps;
  double clip_exp;  // < 0: None
  int decoupled;
};

// timm Adopt (adopt / adoptw): _single_tensor_adopt. On the first step only the second moment
// is set (to g²); the parameter and the first moment wait, decided on the device from the step
// count.
char *torch_ext_adopt(const StepCommon *c, tensor *exp_avg, tensor *exp_avg_sq,
                      const AdoptHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    Tensor s = c->step->to(at::kDouble);
    Tensor first = s == 1;
    Skip hold = skip.widened(first);
    std::optional<Tensor> clip;
    if (h->clip_exp >= 0) clip = at::pow(s - 1, h->clip_exp);
    for (int i : with_grad(c->params, c->n)) {
      Tensor p = hold.work(*c->params[i]), m = hold.work(*exp_avg[i]);
      Tensor v = exp_avg_sq[i]->clone();
      Tensor grad = c->params[i]->grad();
      double lr = c->lr[i], wd = c->wd[i];
      if (wd != 0 && !h->decoupled) grad = grad.add(p, wd);
      Tensor v_first = exp_avg_sq[i]->addcmul(grad, grad);
      if (wd != 0 && h->decoupled) p.add_(p, -lr * wd);
      Tensor denom = at::clamp_min(v.sqrt(), h->eps);
      Tensor normed = grad.div(denom);
      if (clip) {
        Tensor cv = as(*clip, normed);
        normed.clamp_(-cv, cv);
      }
      m.lerp_(normed, 1 - h->beta1);
      p.add_(m, -lr);
      v.mul_(h->beta2).addcmul_(grad, grad, 1 - h->beta2);
      hold.commit(*c->params[i], p);
      hold.commit(*exp_avg[i], m);
      Tensor v_new = at::where(first, v_first, v);
      skip.commit(*exp_avg_sq[i], v_new);
      if (!c->found_inf) exp_avg_sq[i]->copy_(v_new);
    }
  })
}

struct NAdamWHyper {
  double beta1, beta2, eps;
};

// timm NAdamW: _single_tensor_nadamw's ops as foreach ops, one pass per (lr, wd, dtype) group
// (also Muon's fallback for nesterov, nadamuon).
char *torch_ext_timm_nadamw(const StepCommon *c, tensor *exp_avg, tensor *exp_avg_sq,
                            const NAdamWHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    Tensor s = c->step->to(at::kDouble);
    Tensor bc1 = one_minus_pow(h->beta1, s);
    Tensor bc2_sqrt = one_minus_pow(h->beta2, s).sqrt();
    for (const auto &g : foreach_groups(c, with_grad(c->params, c->n), skip)) {
      Lists l(c, g, skip, {exp_avg, exp_avg_sq});
      auto &ms = l.states[0], &vs = l.states[1];
      double lr = c->lr[g[0]];
      at::_foreach_mul_(l.params, 1. - lr * c->wd[g[0]]);
      at::_foreach_lerp_(ms, l.grads, 1 - h->beta1);
      at::_foreach_mul_(vs, h->beta2);
      at::_foreach_addcmul_(vs, l.grads, l.grads, 1 - h->beta2);
      auto m_nesterov = at::_foreach_lerp(ms, l.grads, 1 - h->beta1);
      auto denom = at::_foreach_sqrt(vs);
      at::_foreach_div_(denom, as(bc2_sqrt, vs[0]));
      at::_foreach_add_(denom, h->eps);
      auto update = at::_foreach_div(m_nesterov, denom);
      at::_foreach_mul_(update, as(-lr / bc1, l.params[0]));
      at::_foreach_add_(l.params, update);
      l.commit(c, g, skip, {exp_avg, exp_avg_sq});
    }
  })
}

struct NAdamHyper {
  double beta1, beta2, eps, momentum_decay;
  int decoupled;
};

// torch.optim.NAdam (decoupled_weight_decay for OpenCLIP's `--opt nadamw`), in the foreach ops
// of torch's _multi_tensor_nadam, one pass per (lr, wd, dtype) group. `mu_product` (f32 scalar
// on the device) is the product of the momentum schedule so far, one for every parameter (torch
// keeps equal copies per parameter).
char *torch_ext_nadam(const StepCommon *c, tensor *exp_avg, tensor *exp_avg_sq,
                      tensor mu_product, const NAdamHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    Tensor s = c->step->to(at::kDouble);
    Tensor bc2 = one_minus_pow(h->beta2, s);
    auto mu_at = [&](const Tensor &t) {
      return h->beta1 * at::rsub(0.5 * at::pow(0.96, t * h->momentum_decay), 1.0);
    };
    Tensor mu = mu_at(s), mu_next = mu_at(s + 1);
    // f32, as torch's `mu_product *= mu`; then in f64 as its Python floats.
    Tensor product = (*mu_product * mu.to(at::kFloat)).to(at::kDouble);
    Tensor coef_grad = (1.0 - mu) / at::rsub(product, 1.0);
    Tensor coef_avg = mu_next / at::rsub(product * mu_next, 1.0);
    for (const auto &g : foreach_groups(c, with_grad(c->params, c->n), skip)) {
      Lists l(c, g, skip, {exp_avg, exp_avg_sq});
      auto &ms = l.states[0], &vs = l.states[1];
      double lr = c->lr[g[0]], wd = c->wd[g[0]];
      if (wd != 0) {
        if (h->decoupled)
          at::_foreach_mul_(l.params, 1 - lr * wd);
        else
          l.grads = at::_foreach_add(l.grads, l.params, wd);
      }
      at::_foreach_lerp_(ms, l.grads, 1 - h->beta1);
      at::_foreach_mul_(vs, h->beta2);
      at::_foreach_addcmul_(vs, l.grads, l.grads, 1 - h->beta2);
      auto denom = at::_foreach_div(vs, as(bc2, vs[0]));
      at::_foreach_sqrt_(denom);
      at::_foreach_add_(denom, h->eps);
      auto step_g = at::_foreach_div(l.grads, denom);
      at::_foreach_mul_(step_g, as(-lr * coef_grad, l.params[0]));
      at::_foreach_add_(l.params, step_g);
      auto step_m = at::_foreach_div(ms, denom);
      at::_foreach_mul_(step_m, as(-lr * coef_avg, l.params[0]));
      at::_foreach_add_(l.params, step_m);
      l.commit(c, g, skip, {exp_avg, exp_avg_sq});
    }
    Tensor new_product = skip.work(*mu_product);
    new_product.mul_(mu.to(at::kFloat));
    skip.commit(*mu_product, new_product);
  })
}

struct MuonHyper {
  double momentum, eps, safety_factor, beta2;
  const double *coefficients;  // (a, b, c) per Newton–Schulz step, `ns_steps` of them
  int ns_steps;
  int nesterov;
  int adjust_lr_fn;  // 0 none, 1 original, 2 match_rms_adamw, 3 rms_to_rms, 4 rsqrt_in
  int batched, normalize_spatial, scale_eps, adamuon;
};

namespace {

// timm's zeropower_via_newtonschulz in bf16: X ← aX + (bA + cA²)X with A = XXᵀ, after scaling
// the spectral norm to at most 1, on the side with fewer rows.
Tensor newton_schulz(const Tensor &g, const MuonHyper &h) {
  Tensor x = g.to(at::kBFloat16, false, true);
  bool transposed = x.size(-2) > x.size(-1);
  if (transposed) x = x.mT();
  double eps = h.eps;
  if (h.scale_eps) eps *= std::sqrt(static_cast<double>(g.size(-1)) / g.size(-2));
  Tensor norm = at::linalg_vector_norm(x, 2, at::IntArrayRef{-2, -1}, true).mul(h.safety_factor);
  x.div_(h.scale_eps ? norm.add_(eps) : norm.clamp_min_(eps));
  bool batched = x.dim() > 2;
  x = x.contiguous();
  auto a_shape = x.sizes().vec();
  a_shape.back() = x.size(-2);
  Tensor a = at::empty(a_shape, x.options()), b = at::empty_like(a), cc = at::empty_like(x);
  for (int k = 0; k < h.ns_steps; k++) {
    double ca = h.coefficients[3 * k], cb = h.coefficients[3 * k + 1],
           cc_ = h.coefficients[3 * k + 2];
    if (batched) {
      at::baddbmm_out(a, a, x, x.mT(), 0.0, 1.0);
      at::baddbmm_out(b, a, a, a, cb, cc_);
      at::baddbmm_out(cc, x, b, x, ca, 1.0);
    } else {
      at::addmm_out(a, a, x, x.mT(), 0.0, 1.0);
      at::addmm_out(b, a, a, a, cb, cc_);
      at::addmm_out(cc, x, b, x, ca, 1.0);
    }
    std::swap(x, cc);
  }
  return transposed ? x.mT() : x;
}

// timm's get_lr_scale / get_adamuon_lr_scale: (scale, use_rms_norm).
std::pair<double, bool> muon_lr_scale(const Tensor &ortho, const MuonHyper &h) {
  double out = ortho.size(-2), in = ortho.size(-1);
  double numel = static_cast<double>(ortho.numel());
  if (h.adamuon) {
    switch (h.adjust_lr_fn) {
      case 2: return {0.2 * std::sqrt(numel), true};
      case 3: return {std::sqrt(out / in), false};
      case 4: return {std::pow(in, -0.5), false};
      default: return {1.0, false};
    }
  }
  switch (h.adjust_lr_fn) {
    case 1: return {std::sqrt(std::max(1.0, out / in)), false};
    case 2: return {0.2 * std::sqrt(std::max(out, in)), false};
    case 3: return {std::sqrt(out / in), false};
    default: return {1.0, false};
  }
}

}  // namespace

// timm Muon's Muon / AdaMuon update of the parameters it routes to Newton–Schulz (2-D and
// larger matrices; its AdamW fallback is stepped by the caller): _single_tensor_muon /
// _single_tensor_adamuon. `exp_avg_sq` only for AdaMuon.
char *torch_ext_muon(const StepCommon *c, tensor *momentum_buffer, tensor *exp_avg_sq,
                     const MuonHyper *h) {
  GUARD({
    at::NoGradGuard no_grad;
    Skip skip(c->found_inf);
    Tensor s = c->step->to(at::kDouble);
    for (int i : with_grad(c->params, c->n)) {
      Tensor p = skip.work(*c->params[i]), buf = skip.work(*momentum_buffer[i]);
      const Tensor &grad = c->params[i]->grad();
      double lr = c->lr[i];
      p.mul_(1 - lr * c->wd[i]);
      buf.lerp_(grad, 1. - h->momentum);
      Tensor update = h->nesterov ? grad.lerp(buf, h->momentum) : buf.clone();
      auto shape = update.sizes().vec();
      Tensor reshaped = update;
      if (update.dim() >= 3) {
        reshaped = h->batched ? update.reshape({shape[0], shape[1], -1}).permute({2, 0, 1})
                              : update.reshape({shape[0], -1});
      }
      Tensor ortho = newton_schulz(reshaped, *h);
      auto [scale, use_rms] = muon_lr_scale(ortho, *h);
      bool batched = h->batched && ortho.dim() >= 3;
      if (batched && !h->adamuon && h->normalize_spatial) scale *= std::pow(ortho.size(0), -0.5);
      if (batched) ortho = ortho.permute({1, 2, 0});
      ortho = ortho.reshape(shape);
      if (!h->adamuon) {
        p.add_(ortho, -lr * scale);
        skip.commit(*c->params[i], p);
        skip.commit(*momentum_buffer[i], buf);
        continue;
      }
      Tensor v = skip.work(*exp_avg_sq[i]);
      // The ops below promote the bf16 directions to the moment's dtype element by element;
      // converting them once gives the same values without the slow mixed-dtype loops.
      ortho = ortho.to(v.scalar_type());
      v.mul_(h->beta2).addcmul_(ortho, ortho, 1.0 - h->beta2);
      Tensor denom = use_rms ? v.sqrt().add_(h->eps)
                             : (v / one_minus_pow(h->beta2, s)).sqrt().add_(h->eps);
      Tensor adaptive = ortho / denom;
      if (use_rms) adaptive = adaptive / at::linalg_vector_norm(adaptive, 2).add_(h->eps);
      if (h->batched && shape.size() >= 3 && h->normalize_spatial) {
        double spatial = 1;
        for (size_t d = 2; d < shape.size(); d++) spatial *= shape[d];
        scale *= std::pow(spatial, -0.5);
      }
      p.add_(adaptive, -lr * scale);
      skip.commit(*c->params[i], p);
      skip.commit(*momentum_buffer[i], buf);
      skip.commit(*exp_avg_sq[i], v);
    }
  })
}

}  // extern "C"
