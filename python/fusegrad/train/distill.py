"""Knowledge distillation (Hinton et al., 2015): a small student learns from the labels and from a
trained teacher's softened outputs.

    loss = alpha * cross_entropy(student, labels)
           + (1 - alpha) * T² * KL(softmax(teacher / T) || softmax(student / T))

alpha weighs the hard loss, as in Keras's Distiller example; the T² keeps the soft loss's
gradients the size of the hard loss's as the temperature T changes. The KL term is per sample
(F.kl_div with reduction "batchmean").

Three ways in: distillation_loss() on logits for a hand-written loop; a Distiller (the teacher
and the settings) called as distiller(student_logits, inputs, labels); DistillationTrainer, the
Trainer whose train_step uses a Distiller (evaluation and metrics stay those of the plain
cross-entropy, so validation figures compare with an undistilled model's)."""
from __future__ import annotations

import numbers

from .. import nn
from ..autograd import no_grad
from ..nn import functional as F
from ..tensor import Tensor
from .trainer import Trainer


def _check(temperature, alpha):
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"distillation: temperature must be a positive number, got {temperature!r}")
    if not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation: alpha must be in [0, 1], got {alpha!r}")


def distillation_loss(student_logits: Tensor, teacher_logits, labels, temperature: float = 4.0,
                      alpha: float = 0.5) -> Tensor:
    """alpha * cross-entropy with the labels + (1 - alpha) * T² * KL(teacher's softened
    distribution || student's), averaged over the batch. The teacher's logits (a Tensor or an
    array) are a constant: no gradient reaches them."""
    _check(temperature, alpha)
    teacher = teacher_logits.detach() if isinstance(teacher_logits, Tensor) else Tensor(teacher_logits)
    if teacher.shape != student_logits.shape:
        raise ValueError(f"distillation_loss: student logits {student_logits.shape} and teacher logits "
                         f"{teacher.shape} differ in shape")
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher.to(student_logits.dtype) / t, -1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return hard * alpha + soft * ((1.0 - alpha) * t * t)


class Distiller:
    """A trained teacher and the distillation settings. distiller(student_logits, inputs, labels)
    runs the teacher on the inputs (eval mode, no gradients) and returns distillation_loss."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"Distiller: teacher must be an nn.Module, got {type(teacher).__name__}")
        _check(temperature, alpha)
        self.teacher, self.temperature, self.alpha = teacher, float(temperature), float(alpha)

    def teacher_logits(self, inputs) -> Tensor:
        self.teacher.eval()  # dropout off, BatchNorm on its running statistics
        with no_grad():
            return self.teacher(inputs if isinstance(inputs, Tensor) else Tensor._wrap(inputs, False))

    def __call__(self, student_logits: Tensor, inputs, labels) -> Tensor:
        return distillation_loss(student_logits, self.teacher_logits(inputs), labels, self.temperature, self.alpha)

    def __repr__(self):
        return f"Distiller({type(self.teacher).__name__}, temperature={self.temperature}, alpha={self.alpha})"


class DistillationTrainer(Trainer):
    """A Trainer of `model` (the student) whose training loss is `distiller`'s; everything else
    (fit, evaluate, predict, callbacks, checkpoints of the student) is the Trainer's, with the
    cross-entropy as the loss that evaluation reports. The teacher is moved to the trainer's
    device and is not part of checkpoints. Takes the Trainer's keyword arguments."""

    def __init__(self, model: nn.Module, distiller: Distiller, optimizer, **kwargs):
        if not isinstance(distiller, Distiller):
            raise TypeError(f"DistillationTrainer: distiller must be a Distiller, got {type(distiller).__name__}")
        if "loss" in kwargs:
            raise TypeError("DistillationTrainer: the training loss is the distiller's; do not pass loss=")
        super().__init__(model, "cross_entropy", optimizer, **kwargs)
        self.distiller = distiller
        distiller.teacher.to(self.device)

    def training_loss(self, out, inputs, yb):
        return self.distiller(out, inputs, yb)
