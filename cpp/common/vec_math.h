// Transcendental functions on VecF, accurate to a few ulp over float32's range, written so the
// same code serves every ISA level. None of them sets errno or raises.
#pragma once
#include "common/simd.h"

namespace fusegrad {
namespace FG_ISA_NS {

// e^x by Cody-Waite range reduction: x = n*ln2 + r with |r| <= ln2/2, e^r by its Taylor series
// to degree 7 (truncation error below 2e-9 relative on that interval), then scaled by 2^n.
// Below -87.34 (where e^x leaves the normal floats) the result is 0, above 88.72 it is +inf, and
// in between 88 and 88.72 it is capped at e^88 so that 2^n stays a normal float. NaN stays NaN
// (the clamps are ordered so that max/min pass a NaN operand through).
inline VecF exp(VecF x) {
  const VecF lo = set1(-87.33654f), hi = set1(88.0f);
  const VecF xc = min(hi, max(lo, x));
  const VecF n = round_nearest(xc * set1(1.44269504088896341f));
  VecF r = fmadd(n, set1(-0.693145751953125f), xc);      // ln2 split in two so n*ln2_hi is exact
  r = fmadd(n, set1(-1.42860682030941723e-06f), r);
  VecF p = set1(1.0f / 5040.0f);
  p = fmadd(p, r, set1(1.0f / 720.0f));
  p = fmadd(p, r, set1(1.0f / 120.0f));
  p = fmadd(p, r, set1(1.0f / 24.0f));
  p = fmadd(p, r, set1(1.0f / 6.0f));
  p = fmadd(p, r, set1(0.5f));
  p = fmadd(p, r, set1(1.0f));
  p = fmadd(p, r, set1(1.0f));
  const VecF e = p * pow2_integral(n);
  return select(x > set1(88.72283f), set1(__builtin_inff()), select(x < lo, set1(0.0f), e));
}

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
