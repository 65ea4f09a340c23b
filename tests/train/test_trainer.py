"""Trainer, History, callbacks, metrics, interrupts and checkpoints with exact resume."""
import csv
import os
import signal
import sys

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import models, nn, optim
from fusegrad.data import DataLoader, RandomShift, TensorDataset
from fusegrad.train import (
    Accuracy,
    BinaryAccuracy,
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    MeanAbsoluteError,
    MeanSquaredError,
    ModelCheckpoint,
    ProgressBar,
    TopKAccuracy,
    Trainer,
)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from fusegrad.data import load_digits

    return load_digits()


def small_mlp(dropout=0.0):
    layers = [nn.Flatten(), nn.Linear(64, 32), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(32, 10))


def make_trainer(seed=0, lr=1e-2, dropout=0.0, scheduler=None, metrics=("accuracy",), **kw):
    fg.manual_seed(seed)
    model = small_mlp(dropout)
    opt = optim.Adam(model.parameters(), lr=lr)
    sched = scheduler(opt) if scheduler else None
    return Trainer(model, nn.CrossEntropyLoss(), opt, metrics=list(metrics), device="cpu", scheduler=sched, **kw)


def weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls, self.batch_logs, self.epoch_weights = [], [], []

    def on_train_begin(self, logs=None): self.calls.append("train_begin")
    def on_train_end(self, logs=None): self.calls.append("train_end")
    def on_epoch_begin(self, epoch, logs=None): self.calls.append(f"epoch_begin{epoch}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end{epoch}")
        self.epoch_weights.append(weights(self.trainer.model))

    def on_train_batch_end(self, batch, logs=None): self.batch_logs.append(dict(logs))
    def on_test_begin(self, logs=None): self.calls.append("test_begin")
    def on_predict_batch_end(self, batch, logs=None): self.calls.append(f"predict{batch}")


# --- fit, evaluate, predict -----------------------------------------------------------------------


def test_history_keys_and_lengths(digits):
    (x, y), (xt, yt) = digits
    trainer = make_trainer(metrics=["accuracy", "top3_accuracy"])
    rec = Recorder()
    h = trainer.fit(x[:300], y[:300], epochs=3, batch_size=64, validation_data=(xt, yt), callbacks=[rec], verbose=0)
    assert list(h.history) == ["loss", "accuracy", "top3_accuracy", "val_loss", "val_accuracy", "val_top3_accuracy"]
    assert all(len(v) == 3 for v in h.history.values()) and h.epoch == [0, 1, 2]
    assert trainer.epoch == 3 and h is trainer.history and not h.interrupted
    assert h.history["loss"][2] < h.history["loss"][0]
    assert all(a <= b for a, b in zip(h.history["accuracy"], h.history["top3_accuracy"]))
    assert rec.calls[:3] == ["train_begin", "epoch_begin0", "test_begin"] and rec.calls[-1] == "train_end"
    assert len(rec.batch_logs) == 3 * 5 and rec.batch_logs[4]["size"] == 300 - 4 * 64
    # the last batch's running figures are the epoch's figures
    assert rec.batch_logs[4]["loss"] == pytest.approx(h.history["loss"][0])
    # evaluate agrees with the epoch-end validation figures (same weights, same data)
    ev = trainer.evaluate(xt, yt, batch_size=100)
    assert set(ev) == {"loss", "accuracy", "top3_accuracy"}
    assert ev["loss"] == pytest.approx(h.history["val_loss"][-1], rel=1e-5)
    assert ev["accuracy"] == pytest.approx(h.history["val_accuracy"][-1])
    pred = trainer.predict(xt, batch_size=50, callbacks=[rec])
    assert pred.shape == (len(xt), 10) and isinstance(pred, np.ndarray)
    assert float((pred.argmax(1) == yt).mean()) == pytest.approx(ev["accuracy"])
    assert rec.calls[-1] == f"predict{-(-len(xt) // 50) - 1}"


def test_validation_split_takes_the_last_fraction(digits):
    (x, y), _ = digits
    trainer = make_trainer()
    h = trainer.fit(x[:200], y[:200], epochs=2, batch_size=50, validation_split=0.25, verbose=0)
    assert len(h.history["val_loss"]) == 2
    ev = trainer.evaluate(x[150:200], y[150:200])
    assert ev["loss"] == pytest.approx(h.history["val_loss"][-1], rel=1e-5)


def test_fit_accepts_a_dataloader_and_tensors(digits):
    (x, y), (xt, yt) = digits
    trainer = make_trainer()
    loader = DataLoader(TensorDataset(fg.tensor(x[:256]), y[:256]), batch_size=32, shuffle=True, seed=1)
    val = DataLoader(TensorDataset(xt, yt), batch_size=128)
    h = trainer.fit(loader, epochs=2, validation_data=val, verbose=0)
    assert len(h.history["val_accuracy"]) == 2


def test_small_cnn_on_digits_reaches_97_percent(digits):
    (x, y), (xt, yt) = digits
    fg.manual_seed(0)
    model = models.digits_cnn()
    opt = optim.Adam(model.parameters(), lr=2e-3)
    epochs, batch = 12, 32
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * -(-len(x) // batch))
    trainer = Trainer(model, "cross_entropy", opt, device="cpu", scheduler=sched, scheduler_interval="step", seed=0)
    trainer.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
    acc = trainer.evaluate(xt, yt)["accuracy"]
    print(f"digits CNN, {epochs} epochs: test accuracy {acc:.4f}")
    assert acc >= 0.97


def test_binary_classifier_with_bce():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 2)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1]) > 0).astype(np.float32)[:, None]  # XOR of the signs
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1), nn.Sigmoid())
    trainer = Trainer(model, "bce", optim.Adam(model.parameters(), lr=0.05), device="cpu")
    h = trainer.fit(x, y, epochs=40, batch_size=64, verbose=0)
    assert trainer.evaluate(x, y)["binary_accuracy"] >= 0.95
    assert list(h.history) == ["loss", "binary_accuracy"]


def test_trainer_errors(digits):
    (x, y), _ = digits
    trainer = make_trainer()
    loader = DataLoader(TensorDataset(x[:10], y[:10]))
    with pytest.raises(ValueError, match="inside the DataLoader"):
        trainer.fit(loader, y[:10], verbose=0)
    with pytest.raises(ValueError, match="y is required"):
        trainer.fit(x[:10], verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        trainer.fit(loader, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        trainer.fit(x[:10], y[:10], validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="leaves no"):
        trainer.fit(x[:3], y[:3], validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="verbose"):
        trainer.fit(x[:10], y[:10], verbose=3)
    with pytest.raises(ValueError, match="validation_data"):
        trainer.fit(x[:10], y[:10], validation_data=x[:5], verbose=0)
    with pytest.raises(TypeError, match="Callback"):
        trainer.fit(x[:10], y[:10], callbacks=[print], verbose=0)
    with pytest.raises(ValueError, match="unknown metric"):
        make_trainer(metrics=["precision"])
    with pytest.raises(ValueError, match="unknown loss"):
        Trainer(small_mlp(), "hinge", optim.SGD(small_mlp().parameters()), device="cpu")
    with pytest.raises(TypeError, match="nn.Module"):
        Trainer(lambda v: v, "mse", optim.SGD(small_mlp().parameters()), device="cpu")
    with pytest.raises(ValueError, match="scheduler_interval"):
        make_trainer(scheduler_interval="batch")


# --- metrics ----------------------------------------------------------------------------------------


def test_metrics_against_plain_references(rng):
    out = rng.standard_normal((37, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 37)
    ranks = (out > out[np.arange(37), labels][:, None]).sum(1)
    for metric, expected in [
        (Accuracy(), np.mean(out.argmax(1) == labels)),
        (TopKAccuracy(1), np.mean(out.argmax(1) == labels)),
        (TopKAccuracy(3), np.mean(ranks < 3)),
        (TopKAccuracy(10), 1.0),
    ]:
        metric.update(out[:20], labels[:20])
        metric.update(out[20:], labels[20:])
        assert metric.result() == pytest.approx(expected), metric.name
    onehot = np.eye(7, dtype=np.float32)[labels]
    acc = Accuracy()
    acc.update(out, onehot)
    assert acc.result() == pytest.approx(np.mean(out.argmax(1) == labels))
    pred, target = rng.random((11, 3)).astype(np.float32), rng.random((11, 3)).astype(np.float32)
    for metric, expected in [(MeanSquaredError(), np.mean((pred.astype(np.float64) - target) ** 2)),
                             (MeanAbsoluteError(), np.mean(np.abs(pred.astype(np.float64) - target)))]:
        metric.update(pred[:4], target[:4])
        metric.update(pred[4:], target[4:])
        assert metric.result() == pytest.approx(expected, rel=1e-6)
    t01 = (rng.random((11, 1)) > 0.5).astype(np.float32)
    b = BinaryAccuracy()
    b.update(pred[:, :1], t01)
    assert b.result() == pytest.approx(np.mean((pred[:, :1] > 0.5) == (t01 > 0.5)))
    logits = BinaryAccuracy(from_logits=True)
    logits.update(pred[:, :1] - 0.5, t01)
    assert logits.result() == pytest.approx(b.result())
    assert np.isnan(Accuracy().result())
    with pytest.raises(ValueError, match="labels of shape"):
        Accuracy().update(out, labels[:5])
    with pytest.raises(ValueError, match="k must be"):
        TopKAccuracy(0)


# --- callbacks ---------------------------------------------------------------------------------------


class Inject(Callback):
    """Puts a chosen value into the epoch logs, before the callbacks after it see them."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.values[epoch]


def test_early_stopping_stops_and_restores(digits):
    (x, y), _ = digits
    trainer = make_trainer()
    rec = Recorder()
    stop = EarlyStopping(monitor="score", patience=1, restore_best_weights=True)
    h = trainer.fit(x[:128], y[:128], epochs=10, batch_size=64, verbose=0,
                    callbacks=[Inject([5.0, 3.0, 4.0, 3.5, 1.0, 0.0]), stop, rec])
    assert h.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for k, v in weights(trainer.model).items():
        np.testing.assert_array_equal(v, rec.epoch_weights[1][k])


def test_early_stopping_restores_best_weights_without_stopping(digits):
    (x, y), _ = digits
    trainer = make_trainer()
    rec = Recorder()
    stop = EarlyStopping(monitor="score", mode="min", patience=5, restore_best_weights=True)
    h = trainer.fit(x[:128], y[:128], epochs=4, batch_size=64, verbose=0,
                    callbacks=[Inject([3.0, 1.0, 2.0, 2.5]), stop, rec])
    assert len(h.epoch) == 4 and stop.stopped_epoch is None
    for k, v in weights(trainer.model).items():
        np.testing.assert_array_equal(v, rec.epoch_weights[1][k])
    assert not np.array_equal(rec.epoch_weights[3]["1.weight"], rec.epoch_weights[1]["1.weight"])


def test_early_stopping_min_delta_and_max_mode(digits):
    (x, y), _ = digits
    trainer = make_trainer()
    stop = EarlyStopping(monitor="score", patience=0, min_delta=0.1, mode="max")
    h = trainer.fit(x[:64], y[:64], epochs=6, batch_size=64, verbose=0,
                    callbacks=[Inject([0.5, 0.65, 0.7, 0.9, 1.0, 1.0]), stop])
    assert h.epoch == [0, 1, 2]  # 0.7 is not 0.1 better than 0.65
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.warns(UserWarning, match="not in the logs"):
        trainer.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[EarlyStopping(monitor="val_loss")])


def test_model_checkpoint_and_csv_logger(digits, tmp_path):
    (x, y), _ = digits
    trainer = make_trainer()
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="score", save_best_only=True)
    every = ModelCheckpoint(str(tmp_path / "e{epoch:02d}-{score:.1f}.safetensors"), monitor="score")
    log = CSVLogger(tmp_path / "log.csv")
    trainer.fit(x[:64], y[:64], epochs=4, batch_size=32, verbose=0,
                callbacks=[Inject([2.0, 1.0, 3.0, 0.5]), best, every, log])
    assert best.saved == [str(tmp_path / "best.safetensors")] * 3  # epochs 1, 2 and 4 improved
    assert sorted(os.listdir(tmp_path)) == ["best.safetensors", "e01-2.0.safetensors", "e02-1.0.safetensors",
                                            "e03-3.0.safetensors", "e04-0.5.safetensors", "log.csv"]
    final = fg.load(tmp_path / "best.safetensors")
    for k, v in weights(trainer.model).items():
        np.testing.assert_array_equal(final[k].numpy(), v)  # the last epoch was the best
    rows = list(csv.reader(open(tmp_path / "log.csv")))
    assert rows[0] == ["epoch", "loss", "accuracy", "score"] and len(rows) == 5
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3"] and rows[4][3] == "0.5"
    assert float(rows[1][1]) == pytest.approx(trainer.history.history["loss"][0])
    CSVLogger(tmp_path / "log.csv", append=True)  # appending writes no second header
    trainer.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[Inject([9.0]),
                                                                 CSVLogger(tmp_path / "log.csv", append=True)])
    rows = list(csv.reader(open(tmp_path / "log.csv")))
    assert len(rows) == 6 and rows[5][3] == "9.0"


def test_learning_rate_scheduler_per_epoch_and_per_step(digits):
    (x, y), _ = digits
    trainer = make_trainer(lr=0.1)
    seen = []

    class Watch(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(self.trainer.optimizer.param_groups[0]["lr"])

    sched = LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** epoch)
    h = trainer.fit(x[:64], y[:64], epochs=3, batch_size=32, verbose=0, callbacks=[sched, Watch()])
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    seen.clear()
    trainer.fit(x[:64], y[:64], epochs=2, batch_size=32, verbose=0,
                callbacks=[LearningRateScheduler(lambda step, lr: 0.01 * (step + 1), interval="step"), Watch()])
    assert seen == pytest.approx([0.01, 0.02, 0.03, 0.04])
    # an fusegrad scheduler object, stepped per step
    opt = trainer.optimizer
    opt.param_groups[0]["lr"] = 0.2
    opt.param_groups[0].pop("initial_lr", None)
    step_lr = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    seen.clear()
    trainer.fit(x[:64], y[:64], epochs=2, batch_size=32, verbose=0,
                callbacks=[LearningRateScheduler(step_lr, interval="step"), Watch()])
    assert seen == pytest.approx([0.2, 0.2, 0.02, 0.02])
    with pytest.raises(ValueError, match="interval"):
        LearningRateScheduler(lambda e, lr: lr, interval="batch")


def test_trainer_scheduler_per_epoch_and_per_step(digits):
    (x, y), _ = digits
    t = make_trainer(lr=0.1, scheduler=lambda o: optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5))
    t.fit(x[:64], y[:64], epochs=3, batch_size=32, verbose=0)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    t = make_trainer(lr=0.1, scheduler=lambda o: optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
                     scheduler_interval="step")
    t.fit(x[:64], y[:64], epochs=3, batch_size=32, verbose=0)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 6)


def test_progress_one_line_per_epoch(digits, capsys):
    (x, y), (xt, yt) = digits
    trainer = make_trainer()
    trainer.fit(x[:128], y[:128], epochs=2, batch_size=32, validation_data=(xt[:50], yt[:50]), verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "samples/s" in lines[1]
    assert "val_accuracy" in lines[1] and "loss:" in lines[1]


def test_progress_bar_with_tqdm(digits, tmp_path, capsys):
    (x, y), _ = digits
    trainer = make_trainer()
    with open(tmp_path / "bar.txt", "w") as f:
        trainer.fit(x[:96], y[:96], epochs=2, batch_size=32, callbacks=[ProgressBar(1, file=f)])
    text = (tmp_path / "bar.txt").read_text()
    assert "Epoch 2/2" in text and "3/3" in text and "samples/s" in text and "loss" in text
    assert "100%|" in text  # a tqdm bar, not plain lines
    trainer.fit(x[:96], y[:96], epochs=1, batch_size=32, verbose=1)  # the default: a bar on stderr
    captured = capsys.readouterr()
    assert "Epoch 1/1" in captured.err and "3/3" in captured.err and captured.out == ""


def test_progress_bar_asks_for_the_running_logs_at_most_every_refresh(digits, tmp_path, monkeypatch):
    """Reading the running loss waits for a GPU: the bar asks for it at most every refresh_s, and
    callbacks that act on every batch still get it every batch."""
    (x, y), _ = digits
    trainer = make_trainer()
    seen = []

    class Every(Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append("loss" in logs)

    monkeypatch.setattr(ProgressBar, "refresh_s", 1e9)
    with open(tmp_path / "bar.txt", "w") as f:
        bar = ProgressBar(1, file=f)
        trainer.fit(x[:160], y[:160], epochs=1, batch_size=32, callbacks=[bar])
        trainer.fit(x[:160], y[:160], epochs=1, batch_size=32, callbacks=[bar, Every()])
    assert seen == [True] * 5
    text = (tmp_path / "bar.txt").read_text()
    assert "loss" in text and "5/5" in text  # the first batch's and the epoch's figures


def test_progress_bar_without_tqdm_says_how_to_get_it(digits, monkeypatch):
    (x, y), _ = digits
    trainer = make_trainer()
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match="needs tqdm.*pip install tqdm"):
        trainer.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=1)
    assert trainer.epoch == 0  # it failed before training
    trainer.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=2)  # plain lines need nothing


def test_history_plot(digits, tmp_path, monkeypatch):
    (x, y), (xt, yt) = digits
    h = make_trainer().fit(x[:64], y[:64], epochs=2, validation_data=(xt[:32], yt[:32]), verbose=0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="needs matplotlib"):
        h.plot(tmp_path / "none.png")
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    h.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- interrupts -----------------------------------------------------------------------------------


class InterruptAt(Callback):
    def __init__(self, epoch, batch, how):
        super().__init__()
        self.at, self.how, self.ended = (epoch, batch), how, False
        self.epoch = None
        self.steps_after = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt
        elif self.epoch is not None and (self.epoch, batch) > self.at:
            self.steps_after += 1

    def on_train_end(self, logs=None):
        self.ended = True


@pytest.mark.parametrize("how", ["signal", "raise"])
def test_ctrl_c_ends_training_and_keeps_the_history(digits, how):
    (x, y), _ = digits
    trainer = make_trainer()
    stop = InterruptAt(1, 2, how)
    handler = signal.getsignal(signal.SIGINT)
    h = trainer.fit(x[:256], y[:256], epochs=5, batch_size=32, callbacks=[stop], verbose=0)
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is put back
    assert stop.ended and stop.steps_after == 0
    assert h.interrupted and h.epoch == [0] and len(h.history["loss"]) == 1
    assert trainer.epoch == 1
    if how == "signal":  # the running batch completed: its figures are kept
        assert h.interrupted_logs["loss"] > 0
    # training can go on from where it stopped
    h2 = trainer.fit(x[:256], y[:256], epochs=2, batch_size=32, verbose=0, initial_epoch=trainer.epoch)
    assert h2.epoch == [1] and not h2.interrupted


# --- checkpoints ------------------------------------------------------------------------------------


def resume_setup(seed):
    """A trainer with dropout, shuffling, an augmenting DataLoader and a per-step schedule."""
    fg.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    return Trainer(model, "cross_entropy", opt, device="cpu", scheduler=sched, scheduler_interval="step")


def test_exact_resume(digits, tmp_path):
    (x, y), (xt, yt) = digits
    x, y = x[:160], y[:160]

    def loader():  # seed=None: the shuffling seed comes from fusegrad's generator, and the checkpoint
        return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, transform=RandomShift(1))

    full = resume_setup(0)
    h_full = full.fit(loader(), epochs=4, validation_data=(xt[:64], yt[:64]), verbose=0)

    first = resume_setup(0)
    first.fit(loader(), epochs=2, validation_data=(xt[:64], yt[:64]), verbose=0)
    first.save_checkpoint(tmp_path / "ckpt.safetensors")

    resumed = resume_setup(123)  # different initial weights and generator state
    fresh_loader = loader()
    resumed.load_checkpoint(tmp_path / "ckpt.safetensors")
    assert resumed.epoch == 2
    h_rest = resumed.fit(fresh_loader, epochs=4, validation_data=(xt[:64], yt[:64]), verbose=0,
                         initial_epoch=resumed.epoch)
    assert h_rest.epoch == [2, 3]
    for key in h_full.history:
        assert h_rest.history[key] == h_full.history[key][2:], key  # bit-identical
    for k, v in weights(full.model).items():
        np.testing.assert_array_equal(weights(resumed.model)[k], v)
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_exact_resume_with_arrays_and_modelcheckpoint(digits, tmp_path):
    (x, y), _ = digits
    x, y = x[:128], y[:128]
    full = resume_setup(0)
    h_full = full.fit(x, y, epochs=3, batch_size=32, verbose=0)
    part = resume_setup(0)
    ckpt = ModelCheckpoint(tmp_path / "t{epoch}.safetensors", full=True)
    part.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[ckpt])
    resumed = resume_setup(5)
    resumed.load_checkpoint(tmp_path / "t1.safetensors")
    h = resumed.fit(x, y, epochs=3, batch_size=32, verbose=0, initial_epoch=resumed.epoch)
    assert h.history["loss"] == h_full.history["loss"][1:]


def test_checkpoint_errors_leave_the_trainer_unchanged(digits, tmp_path):
    (x, y), _ = digits
    trainer = resume_setup(0)
    trainer.fit(x[:64], y[:64], epochs=1, verbose=0)
    path = tmp_path / "c.safetensors"
    trainer.save_checkpoint(path)
    raw = path.read_bytes()

    target = resume_setup(1)
    before = weights(target.model)

    def unchanged():
        for k, v in weights(target.model).items():
            np.testing.assert_array_equal(v, before[k])
        assert target.epoch == 0 and target.optimizer.state == {}

    (tmp_path / "trunc.safetensors").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        target.load_checkpoint(tmp_path / "trunc.safetensors")
    unchanged()
    fg.save(target.model.state_dict(), tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="not a Trainer checkpoint"):
        target.load_checkpoint(tmp_path / "weights.safetensors")
    unchanged()

    other = make_trainer(scheduler=lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=40))
    other.optimizer = optim.AdamW(other.model.parameters())
    other.scheduler = optim.lr_scheduler.CosineAnnealingLR(other.optimizer, T_max=40)
    with pytest.raises(KeyError, match=r"missing keys: \['1.weight'.*unexpected keys: \['0.weight'"):
        other.load_checkpoint(path)
    wider = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 12))
    opt = optim.AdamW(wider.parameters())
    t = Trainer(wider, "cross_entropy", opt, device="cpu", scheduler=optim.lr_scheduler.CosineAnnealingLR(opt, 40))
    with pytest.raises(ValueError, match=r"'7.weight' has shape \(10, 32\)"):
        t.load_checkpoint(path)
    sgd_model = resume_setup(0).model
    sgd = Trainer(sgd_model, "cross_entropy", optim.SGD(sgd_model.parameters()), device="cpu")
    with pytest.raises(ValueError, match="holds AdamW state"):
        sgd.load_checkpoint(path)
    no_sched = Trainer(sgd_model, "cross_entropy", optim.AdamW(sgd_model.parameters()), device="cpu")
    with pytest.raises(ValueError, match="scheduler is CosineAnnealingLR"):
        no_sched.load_checkpoint(path)
    # optimizer state of the wrong shape is caught after the model loaded: the model is rolled back
    tensors, meta = fg.io.load_with_metadata(path)
    tensors["optimizer.state.0.exp_avg"] = fg.tensor(np.zeros((2, 2), np.float32))
    fg.save(tensors, tmp_path / "badopt.safetensors", metadata=meta)
    with pytest.raises(ValueError, match="exp_avg"):
        target.load_checkpoint(tmp_path / "badopt.safetensors")
    unchanged()


def test_checkpoint_carries_extra_metadata(digits, tmp_path):
    from fusegrad.train.checkpoint import read_info

    (x, y), _ = digits
    trainer = resume_setup(0)
    trainer.fit(x[:64], y[:64], epochs=1, verbose=0)
    extra = {"model": "cnn", "data": "digits", "sizes": [1, 2]}
    trainer.save_checkpoint(tmp_path / "c.safetensors", extra=extra)
    assert read_info(tmp_path / "c.safetensors")["extra"] == extra  # from the header, nothing loaded
    assert read_info(tmp_path / "c.safetensors")["epoch"] == 1
    info = resume_setup(1).load_checkpoint(tmp_path / "c.safetensors")
    assert info["extra"] == extra and info["epoch"] == 1
    trainer.save_checkpoint(tmp_path / "plain.safetensors")
    assert read_info(tmp_path / "plain.safetensors")["extra"] == {}
    with pytest.raises(TypeError, match="extra must be a dict"):
        trainer.save_checkpoint(tmp_path / "bad.safetensors", extra=["cnn"])
    with pytest.raises(TypeError, match="cannot store"):
        trainer.save_checkpoint(tmp_path / "bad.safetensors", extra={"x": object()})
    assert not (tmp_path / "bad.safetensors").exists()
    fg.save({"w": np.ones(2, np.float32)}, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="not a Trainer checkpoint"):
        read_info(tmp_path / "weights.safetensors")
    # ModelCheckpoint passes extra into every full checkpoint, and says which epoch it wrote last
    ckpt = ModelCheckpoint(tmp_path / "m.safetensors", full=True, extra=extra)
    trainer.fit(x[:64], y[:64], epochs=3, verbose=0, callbacks=[ckpt], initial_epoch=trainer.epoch)
    assert read_info(tmp_path / "m.safetensors")["extra"] == extra
    assert ckpt.last_saved == (3, str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="full=True"):
        ModelCheckpoint(tmp_path / "w.safetensors", extra=extra)


def test_default_device_follows_cuda_availability():
    model = small_mlp()
    trainer = Trainer(model, "mse", optim.SGD(model.parameters()), metrics=["mae"])
    assert trainer.device == ("cuda:0" if fg.train.default_device() != "cpu" else "cpu")
    if fg.train.default_device() == "cpu":
        assert trainer.device == "cpu"
        with pytest.raises(ValueError, match="no GPU is usable"):
            Trainer(model, "mse", optim.SGD(model.parameters()), device="cuda")


@pytest.mark.cuda
def test_gpu_training_matches_cpu(digits, tmp_path):
    (x, y), (xt, yt) = digits
    results = {}
    for device in ("cpu", "cuda"):
        fg.manual_seed(0)
        model = small_mlp()
        trainer = Trainer(model, "cross_entropy", optim.Adam(model.parameters(), lr=1e-2), device=device, seed=0)
        h = trainer.fit(x[:256], y[:256], epochs=2, batch_size=64, validation_data=(xt, yt), verbose=0)
        results[device] = (h.history, trainer.predict(xt[:10]))
        trainer.save_checkpoint(tmp_path / f"{device}.safetensors")
        trainer.load_checkpoint(tmp_path / f"{device}.safetensors")
        assert trainer.model.state_dict()["1.weight"].device.startswith(device)
    (h_cpu, p_cpu), (h_gpu, p_gpu) = results["cpu"], results["cuda"]
    np.testing.assert_allclose(h_gpu["loss"], h_cpu["loss"], rtol=1e-3)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-3, atol=1e-4)
    assert isinstance(p_gpu, np.ndarray)


def test_fit_calls_continue_the_epoch_sequence(digits):
    """fit(epochs=1) twice trains exactly as fit(epochs=2): each epoch gets its own shuffle."""
    (x, y), _ = digits
    once = make_trainer(dropout=0.2, seed=3)
    h = once.fit(x[:128], y[:128], epochs=2, batch_size=32, verbose=0)
    twice = make_trainer(dropout=0.2, seed=3)
    a = twice.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    b = twice.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    assert a.history["loss"] + b.history["loss"] == h.history["loss"] and twice.epoch == 2
    for k, v in weights(once.model).items():
        np.testing.assert_array_equal(weights(twice.model)[k], v)
