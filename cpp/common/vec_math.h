// Transcendental functions on VecF, accurate to a few ulp over float32's range (tanh_by_sigmoid
// only in absolute terms), written so the same code serves every ISA level (exp has a shorter
// AVX-512 form). None of them sets errno or raises.
#pragma once
#include "common/simd.h"

namespace fusegrad {
namespace FG_ISA_NS {

// e^r for |r| <= ln2/2 after Cody-Waite range reduction x = n*ln2 + r (n integral): the Taylor
// series to degree 7, truncation error below 2e-9 relative on that interval.
inline VecF exp_reduced(VecF x, VecF& n) {
  n = round_nearest(x * set1(1.44269504088896341f));
  VecF r = fmadd(n, set1(-0.693145751953125f), x);  // ln2 split in two so n*ln2_hi is exact
  r = fmadd(n, set1(-1.42860682030941723e-06f), r);
  VecF p = set1(1.0f / 5040.0f);
  p = fmadd(p, r, set1(1.0f / 720.0f));
  p = fmadd(p, r, set1(1.0f / 120.0f));
  p = fmadd(p, r, set1(1.0f / 24.0f));
  p = fmadd(p, r, set1(1.0f / 6.0f));
  p = fmadd(p, r, set1(0.5f));
  p = fmadd(p, r, set1(1.0f));
  return fmadd(p, r, set1(1.0f));
}

// e^x. Below -87.34 (where e^x leaves the normal floats) the result is 0, above 88.72 it is +inf;
// NaN stays NaN.
#if defined(__AVX512F__)
// vscalefps multiplies by 2^n without building 2^n and overflows to +inf by itself, so only the
// lower end needs a mask (not-less-than is true for NaN, which passes through). 14 instructions
// against the portable form's 21: the gate nonlinearities of the RNN cells are mostly this.
inline VecF exp(VecF x) {
  VecF n;
  const VecF p = exp_reduced(min(set1(89.0f), x), n);  // e^89 overflows: so does everything above it
  const __mmask16 keep = _mm512_cmp_ps_mask(x.v, _mm512_set1_ps(-87.33654f), _CMP_NLT_UQ);
  return {_mm512_maskz_scalef_ps(keep, p.v, n.v)};
}
#else
// The clamps keep 2^n a normal float (between 88 and 88.72 the result is capped at e^88) and are
// ordered so that max/min pass a NaN operand through.
inline VecF exp(VecF x) {
  const VecF lo = set1(-87.33654f), hi = set1(88.0f);
  VecF n;
  const VecF p = exp_reduced(min(hi, max(lo, x)), n);
  const VecF e = p * pow2_integral(n);
  return select(x > set1(88.72283f), set1(__builtin_inff()), select(x < lo, set1(0.0f), e));
}
#endif

// 1 / (1 + e^-x): no cancellation for either sign, saturates cleanly to 0 and 1.
inline VecF sigmoid(VecF x) { return set1(1.0f) / (set1(1.0f) + exp(-x)); }

// tanh: near zero its Taylor series (|x| < 0.25, terms to x^11, error < 1e-10), elsewhere
// 1 - 2/(e^2|x| + 1) with the sign restored; that form loses at most an ulp or two of the result
// for |x| >= 0.25 and never overflows.
inline VecF tanh(VecF x) {
  const VecF ax = abs(x);
  const VecF x2 = x * x;
  VecF p = set1(-1382.0f / 155925.0f);
  p = fmadd(p, x2, set1(62.0f / 2835.0f));
  p = fmadd(p, x2, set1(-17.0f / 315.0f));
  p = fmadd(p, x2, set1(2.0f / 15.0f));
  p = fmadd(p, x2, set1(-1.0f / 3.0f));
  const VecF small = fmadd(p * x2, x, x);
  const VecF big_abs = set1(1.0f) - set1(2.0f) / (exp(ax + ax) + set1(1.0f));
  const VecF big = select(x < set1(0.0f), -big_abs, big_abs);
  return select(ax < set1(0.25f), small, big);
}

// tanh as 2 sigmoid(2x) - 1: half of tanh's instructions, absolute error below 2e-7, but the
// relative error grows toward 0 (about 2e-7 / |x|). For the gates of the recurrent cells, whose
// values are only ever multiplied and added, never divided by.
inline VecF tanh_by_sigmoid(VecF x) {
  return set1(2.0f) / (set1(1.0f) + exp(set1(-2.0f) * x)) - set1(1.0f);
}

// erfc(z) for z >= 0 by the Chebyshev fit of Numerical Recipes (erfcc, fractional error below
// 1.2e-7 for every z >= 0): keeps full relative precision in the tail, where 1 - erf(z) would
// cancel. One division and one exp.
inline VecF erfc_nonnegative(VecF z) {
  const VecF t = set1(1.0f) / fmadd(set1(0.5f), z, set1(1.0f));
  VecF p = set1(0.17087277f);
  p = fmadd(p, t, set1(-0.82215223f));
  p = fmadd(p, t, set1(1.48851587f));
  p = fmadd(p, t, set1(-1.13520398f));
  p = fmadd(p, t, set1(0.27886807f));
  p = fmadd(p, t, set1(-0.18628806f));
  p = fmadd(p, t, set1(0.09678418f));
  p = fmadd(p, t, set1(0.37409196f));
  p = fmadd(p, t, set1(1.00002368f));
  p = fmadd(p, t, set1(-1.26551223f));
  return t * exp(p - z * z);
}

// Standard normal CDF, Phi(x) = erfc(-x / sqrt 2) / 2, accurate in relative terms in both tails.
inline VecF normal_cdf(VecF x) {
  const VecF half_tail = set1(0.5f) * erfc_nonnegative(abs(x) * set1(0.70710678118654752f));
  return select(x < set1(0.0f), half_tail, set1(1.0f) - half_tail);
}

// Standard normal density.
inline VecF normal_pdf(VecF x) { return set1(0.39894228040143268f) * exp(set1(-0.5f) * x * x); }

}  // namespace FG_ISA_NS
}  // namespace fusegrad
