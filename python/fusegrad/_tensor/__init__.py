"""The Tensor's methods, by kind (floor 3, with tensor.py): dtype promotion (promote.py),
arithmetic, comparisons and elementwise math (arith.py), shapes and indexing (shape.py),
reductions (reduce.py), the in-place ops (inplace.py), and the function forms
`fusegrad.X(t, ...)` (functional.py). The mixins
build tensors only through `self._wrap` and autograd Functions, so they need nothing from
tensor.py, which assembles the Tensor class from them."""
