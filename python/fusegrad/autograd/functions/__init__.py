"""One Function per op, by family, each with its forward and backward side by side. Forwards run
on raw arrays: heavy ops call fusegrad.ops kernels, cheap ones the storage's array module."""
