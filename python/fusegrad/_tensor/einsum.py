"""einsum (torch.einsum): two operands whose subscripts make a (batched) matrix product run as
one matmul (the GEMM kernels, autograd through MatMul); anything else through the array module's
einsum (autograd.functions.gemm.Einsum)."""
from __future__ import annotations

import math
import string

from ..autograd.functions.gemm import Einsum
from .base import is_tensor
from .promote import result_type


def parse(equation: str, shapes) -> tuple:
    """(input subscripts, output subscripts) with "..." expanded into letters and the implicit
    output ("ij,jk") made explicit (the letters used once, in alphabetical order)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(shapes):
        raise ValueError(f"einsum(): {len(inputs)} operands in the equation {equation!r} but {len(shapes)} given")
    spare = [c for c in string.ascii_letters if c not in equation]
    ell = max((len(s) - len(sub.replace("...", "")) for sub, s in zip(inputs, shapes) if "..." in sub), default=0)
    fill = "".join(spare[:ell])
    expanded = []
    for sub, shape in zip(inputs, shapes):
        if "..." in sub:
            n = len(shape) - len(sub.replace("...", ""))
            sub = sub.replace("...", fill[ell - n:] if n else "")
        if not all(c in string.ascii_letters for c in sub):
            raise ValueError(f"einsum(): invalid subscripts {sub!r} in {equation!r}")
        if len(sub) != len(shape):
            raise ValueError(f"einsum(): the subscripts {sub!r} do not match an operand of shape {tuple(shape)}")
        expanded.append(sub)
    if arrow:
        output = rhs.replace("...", fill)
    else:
        letters = "".join(expanded)
        output = fill + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in fill))
    return expanded, output


def einsum(equation: str, *operands):
    """Sums of products over the subscripts of `equation`, as torch.einsum (operands may also be
    given as one list)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands or not all(is_tensor(t) for t in operands):
        raise TypeError("einsum(): operands must be tensors")
    inputs, output = parse(equation, [t.shape for t in operands])
    sizes = {}
    for sub, t in zip(inputs, operands):
        for c, n in zip(sub, t.shape):
            if sizes.setdefault(c, n) != n and 1 not in (n, sizes[c]):
                raise RuntimeError(f"einsum(): subscript {c} has size {n} for an operand which does not "
                                   f"broadcast with previously seen size {sizes[c]}")
    dtype = result_type(*(t.data for t in operands))
    operands = [t._cast_to(dtype) for t in operands]
    if len(operands) == 2:
        product = _as_matmul(inputs, output, operands)
        if product is not None:
            return product
    return Einsum.apply(*operands, inputs=tuple(inputs), output=output)


def _as_matmul(inputs, output, operands):
    """The einsum as permute -> matmul -> reshape -> permute, or None where it is not one matrix
    product (repeated subscripts, broadcast sizes, a subscript summed within one operand)."""
    (sa, sb), (a, b) = inputs, operands
    if len(set(sa)) != len(sa) or len(set(sb)) != len(sb) or len(set(output)) != len(output):
        return None
    if any(a.shape[sa.index(c)] != b.shape[sb.index(c)] for c in set(sa) & set(sb)):
        return None
    if any(c not in output and c not in (sb if c in sa else sa) for c in sa + sb):
        return None  # summed within one operand: leave it to einsum
    batch = [c for c in output if c in sa and c in sb]
    left = [c for c in output if c in sa and c not in sb]
    right = [c for c in output if c in sb and c not in sa]
    contracted = [c for c in sa if c in sb and c not in output]
    size = dict(zip(sa, a.shape)) | dict(zip(sb, b.shape))
    count = lambda letters: math.prod(size[c] for c in letters)  # noqa: E731
    a3 = a.permute([sa.index(c) for c in batch + left + contracted]).reshape(count(batch), count(left), count(contracted))
    b3 = b.permute([sb.index(c) for c in batch + contracted + right]).reshape(count(batch), count(contracted), count(right))
    out = (a3 @ b3).reshape([size[c] for c in batch + left + right])
    order = batch + left + right
    return out.permute([order.index(c) for c in output]) if order != list(output) else out
