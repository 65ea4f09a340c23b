"""Ready-made models: the classic small networks of the examples, tests and benchmarks, and BERT."""
from .bert import BertConfig, BertForSequenceClassification, BertModel
from .classic import cifar_cnn, digits_cnn, mlp, mnist_cnn

__all__ = ["cifar_cnn", "digits_cnn", "mlp", "mnist_cnn", "BertConfig", "BertModel", "BertForSequenceClassification"]
