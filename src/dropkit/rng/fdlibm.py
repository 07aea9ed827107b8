"""Constants of the Box-Muller normals of the CPU kernels (:mod:`dropkit.rng.cpu`) and their
NumPy twins (:mod:`dropkit.rng.cpu_numpy`): fdlibm's logarithm (e_log.c), sine and cosine
(k_sin.c, k_cos.c) evaluated in +, -, *, / and sqrt, so both give the same bits. One copy, so
the twins cannot drift apart; see the comment above ``_normal_pairs`` in :mod:`dropkit.rng.cpu`.
"""

from __future__ import annotations

import numpy as np

MAGIC = np.uint64(0x4330000000000000)  # bits of 2^52: (2^52 | v) - 2^52 = v, exactly
K_BIAS = 2.0**52 + 1023.0 + 32.0  # undoes the magic, the exponent bias and u1 = v 2^-32
MANT_BITS = np.uint64(0x000FFFFFFFFFFFFF)
SQRT2_CARRY = np.uint64(0x00095F6400000000)  # carries into bit 52 iff the mantissa >= sqrt 2
BIT52 = np.uint64(1 << 52)
EXP_ONE = np.uint64(0x3FF0000000000000)
SHIFT52 = np.uint64(52)
# -2 ln 2 = NLN2_HI + NLN2_LO (fdlibm's ln2_hi, ln2_lo times -2: exact).
NLN2_HI = -2.0 * 6.93147180369123816490e-01
NLN2_LO = -2.0 * 1.90821492927058770002e-10
# -2 Lg1 .. -2 Lg7 (fdlibm e_log.c), so that -2 s R(s^2) needs no extra product.
NLG1 = -2.0 * 6.666666666666735130e-01
NLG2 = -2.0 * 3.999999999940941908e-01
NLG3 = -2.0 * 2.857142874366239149e-01
NLG4 = -2.0 * 2.222219843214978396e-01
NLG5 = -2.0 * 1.818357216161805012e-01
NLG6 = -2.0 * 1.531383769920937332e-01
NLG7 = -2.0 * 1.479819860511658591e-01
ANGLE = 2.0 * np.pi / 2.0**32  # radians per unit of the word
QUARTER = np.uint32(1 << 29)  # an eighth of a turn, in word units
LOW30 = np.uint32((1 << 30) - 1)
# fdlibm k_sin.c / k_cos.c, |x| <= pi/4.
S1 = -1.66666666666666324348e-01
S2 = 8.33333333332248946124e-03
S3 = -1.98412698298579493134e-04
S4 = 2.75573137070700676789e-06
S5 = -2.50507602534068634195e-08
S6 = 1.58969099521155010221e-10
C1 = 4.16666666666666019037e-02
C2 = -1.38888888888741095749e-03
C3 = 2.48015872894767294178e-05
C4 = -2.75573143513906633035e-07
C5 = 2.08757232129817482790e-09
C6 = -1.13596475577881948265e-11
