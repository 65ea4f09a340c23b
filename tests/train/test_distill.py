"""Distillation: distillation_loss against its formula (and PyTorch), the Distiller's teacher
handling, and a DistillationTrainer run on scikit-learn's digits."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import models, nn, optim
from fusegrad.nn import functional as F
from fusegrad.train import DistillationTrainer, Distiller, Trainer, distillation_loss

R = np.random.default_rng(6)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def expected_loss(student, teacher, labels, t, alpha):
    log_p_student = np.log(softmax(student))
    hard = -log_p_student[np.arange(len(labels)), labels].mean()
    p_teacher, p_student = softmax(teacher / t), softmax(student / t)
    soft = (p_teacher * (np.log(p_teacher) - np.log(p_student))).sum(-1).mean()
    return alpha * hard + (1 - alpha) * t * t * soft


@pytest.mark.parametrize("t, alpha", [(1.0, 0.5), (4.0, 0.1), (2.5, 0.0), (3.0, 1.0)])
def test_distillation_loss_is_the_weighted_sum(t, alpha):
    student, teacher, labels = R.standard_normal((6, 5)), 3 * R.standard_normal((6, 5)), R.integers(0, 5, 6)
    got = distillation_loss(fg.tensor(student), teacher, labels, t, alpha)  # float32, as F.cross_entropy
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.item(), expected_loss(student, teacher, labels, t, alpha), rtol=2e-6)


def test_gradients_reach_the_student_only():
    student = fg.tensor(R.standard_normal((4, 3)), requires_grad=True)
    teacher = fg.tensor(R.standard_normal((4, 3)), requires_grad=True)
    labels = np.array([0, 2, 1, 1])
    distillation_loss(student, teacher, labels, 2.0, 0.5).backward()
    assert teacher.grad is None and student.grad is not None
    # alpha = 1 is the plain cross-entropy, gradient included
    plain = fg.tensor(student.numpy(), requires_grad=True)
    F.cross_entropy(plain, labels).backward()
    only_hard = fg.tensor(student.numpy(), requires_grad=True)
    distillation_loss(only_hard, teacher, labels, 2.0, 1.0).backward()
    np.testing.assert_allclose(only_hard.grad.numpy(), plain.grad.numpy(), rtol=1e-6)


def test_against_torch():
    torch = pytest.importorskip("torch")
    student, teacher, labels = R.standard_normal((8, 10)), R.standard_normal((8, 10)), R.integers(0, 10, 8)
    t, alpha = 3.0, 0.3
    ours_in = fg.tensor(student, requires_grad=True)
    ours = distillation_loss(ours_in, teacher, labels, t, alpha)
    theirs_in = torch.tensor(student, dtype=torch.float32, requires_grad=True)
    teacher_log_p = torch.log_softmax(torch.tensor(teacher, dtype=torch.float32) / t, -1)
    soft = torch.nn.functional.kl_div(torch.log_softmax(theirs_in / t, -1), teacher_log_p, reduction="batchmean",
                                      log_target=True)
    theirs = alpha * torch.nn.functional.cross_entropy(theirs_in, torch.tensor(labels)) + (1 - alpha) * t * t * soft
    ours.backward()
    theirs.backward()
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-6)
    np.testing.assert_allclose(ours_in.grad.numpy(), theirs_in.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_distiller_runs_the_teacher_in_eval_mode_without_gradients():
    teacher = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    distiller = Distiller(teacher, temperature=2.0, alpha=0.25)
    x = R.standard_normal((5, 4)).astype(np.float32)
    student = nn.Linear(4, 3)
    loss = distiller(student(x), x, np.array([0, 1, 2, 0, 1]))
    loss.backward()
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    np.testing.assert_array_equal(distiller.teacher_logits(x).numpy(), distiller.teacher_logits(x).numpy())
    assert repr(distiller) == "Distiller(Sequential, temperature=2.0, alpha=0.25)"


def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x, y = (d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def test_a_small_student_learns_digits_from_a_cnn_teacher():
    x, y, x_test, y_test = digits()
    fg.manual_seed(0)
    teacher = models.digits_cnn()
    Trainer(teacher, "cross_entropy", optim.Adam(teacher.parameters(), 1e-3), seed=0).fit(
        x, y, epochs=5, batch_size=32, verbose=0)
    teacher_weights = [p.numpy().copy() for p in teacher.parameters()]
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    trainer = DistillationTrainer(student, Distiller(teacher, temperature=4.0, alpha=0.3),
                                  optim.Adam(student.parameters(), 1e-2), seed=0)
    history = trainer.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = trainer.evaluate(x_test, y_test)
    assert result["accuracy"] > 0.8, result
    # evaluate reports the plain cross-entropy of the student, as a Trainer would
    plain = Trainer(student, "cross_entropy", optim.SGD(student.parameters(), 0.1)).evaluate(x_test, y_test)
    np.testing.assert_allclose(result["loss"], plain["loss"], rtol=1e-6)
    for before, after in zip(teacher_weights, teacher.parameters()):
        np.testing.assert_array_equal(after.numpy(), before)  # the teacher is never trained


def test_errors():
    teacher = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        Distiller(teacher, temperature=0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        Distiller(teacher, alpha=1.5)
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        Distiller(lambda x: x)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(fg.zeros(2, 3), np.zeros((2, 4), np.float32), [0, 1])
    student = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="must be a Distiller"):
        DistillationTrainer(student, teacher, optim.SGD(student.parameters(), 0.1))
    with pytest.raises(TypeError, match="do not pass loss="):
        DistillationTrainer(student, Distiller(teacher), optim.SGD(student.parameters(), 0.1), loss="mse")
