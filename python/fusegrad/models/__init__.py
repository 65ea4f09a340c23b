"""Ready-made models: the classic small networks of the examples, tests and benchmarks."""
from .classic import cifar_cnn, digits_cnn, mlp, mnist_cnn

__all__ = ["cifar_cnn", "digits_cnn", "mlp", "mnist_cnn"]
