"""Compressing the MNIST CNN: prune half its channels and fine-tune, distil it into a smaller
student, quantize to int8, train it under bf16 autocast; one table of test accuracy, size on disk
and inference speed of each model.

    python examples/compress.py [--epochs 4] [--finetune-epochs 2] [--student-epochs 4] [--prune 0.5]
"""
import copy
import os
import sys
import tempfile
import time

import _common
import numpy as np

import fusegrad as fg
from fusegrad import models, nn, no_grad, optim, quantization
from fusegrad.nn.utils import prune
from fusegrad.train import DistillationTrainer, Distiller, Trainer

INFERENCE_BATCH = 500  # images per call when timing inference, as a serving batch would be


def student_cnn(classes: int = 10) -> nn.Sequential:
    """A quarter of the MNIST CNN's channels: conv 3x3 8 -> pool -> conv 3x3 16 -> pool -> dense 32."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(5 * 5 * 16, 32), nn.ReLU(), nn.Linear(32, classes),
    )


def train(model, x, y, validation, args, epochs, lr=2e-3, trainer_class=Trainer, **kw):
    """Fits model (Adam, one-cycle schedule) with a validation split, and evaluates it once."""
    opt = optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // args.batch_size)
    trainer = trainer_class(model, optimizer=opt, device=args.device, scheduler_interval="step",
                            scheduler=optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps), **kw)
    trainer.fit(x, y, epochs=epochs, batch_size=args.batch_size, validation_data=validation, verbose=args.verbose)
    return trainer


def size_on_disk(model) -> int:
    """Bytes of the model's state_dict saved with fusegrad.save (safetensors)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.safetensors")
        fg.save(model.state_dict(), path)
        return os.path.getsize(path)


def inference_speed(model, x, repeats: int = 3) -> float:
    """Images per second of model on the CPU over x in batches of INFERENCE_BATCH (best of repeats)."""
    model = copy.deepcopy(model).cpu().eval()
    best = np.inf
    with no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, len(x), INFERENCE_BATCH):
                model(x[i:i + INFERENCE_BATCH])
            best = min(best, time.perf_counter() - start)
    return len(x) / best


def accuracy(model, x, y) -> float:
    with no_grad():
        logits = np.concatenate([fg.tensor(model(x[i:i + INFERENCE_BATCH])).numpy()
                                 for i in range(0, len(x), INFERENCE_BATCH)])
    return float((logits.argmax(1) == y).mean())


def int8(model, x, samples: int):
    """Static int8 quantization of model, calibrated on the first `samples` training images."""
    prepared = quantization.prepare(copy.deepcopy(model).cpu().eval())
    with no_grad():
        for i in range(0, samples, INFERENCE_BATCH):
            prepared(x[i:min(i + INFERENCE_BATCH, samples)])
    return quantization.convert(prepared)


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=4)
    p.add_argument("--data-dir", default=_common.MNIST_DIR, help="a directory of MNIST IDX files")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--student-epochs", type=int, default=4)
    p.add_argument("--prune", type=float, default=0.5, help="fraction of each conv's channels to remove")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.3, help="weight of the hard (label) loss in distillation")
    p.add_argument("--calibration", type=int, default=1000, help="training images that calibrate the int8 model")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast training")
    args = p.parse_args(argv)
    (x, y), (xt, yt) = _common.mnist_split(args.data_dir)
    x, y = _common.limit(x, y, args.limit)
    xt, yt = _common.limit(xt, yt, args.limit)
    (x, y), validation = _common.split_validation(x, y)
    rows = []

    def row(name, model, test_accuracy):
        rows.append({"model": name, "accuracy": test_accuracy, "size_kb": size_on_disk(model) / 1024,
                     "images_per_s": inference_speed(model, xt),
                     "weights": sum(t.numel() for t in model.state_dict().values())})

    fg.manual_seed(args.seed)
    teacher = models.mnist_cnn()
    trainer = train(teacher, x, y, validation, args, args.epochs, loss="cross_entropy")
    result = trainer.evaluate(xt, yt)
    _common.report("float32 MNIST CNN, test set", result)
    row("float32", teacher, result["accuracy"])

    pruned = prune.prune_channels(teacher.cpu(), args.prune)
    trainer = train(pruned, x, y, validation, args, args.finetune_epochs, lr=1e-3, loss="cross_entropy")
    result = trainer.evaluate(xt, yt)
    _common.report(f"{args.prune:.0%} of channels pruned, fine-tuned, test set", result)
    row(f"pruned {args.prune:.0%} + fine-tuned", pruned, result["accuracy"])

    fg.manual_seed(args.seed)
    student = student_cnn()
    distiller = Distiller(teacher.cpu().eval(), temperature=args.temperature, alpha=args.alpha)
    trainer = train(student, x, y, validation, args, args.student_epochs, trainer_class=DistillationTrainer,
                    distiller=distiller)
    result = trainer.evaluate(xt, yt)
    _common.report("distilled student, test set", result)
    row("distilled student", student, result["accuracy"])

    for name, source in (("int8 (static)", teacher), (f"pruned {args.prune:.0%} + int8", pruned)):
        quantized = int8(source, x, min(args.calibration, len(x)))
        test_accuracy = accuracy(quantized, xt, yt)
        print(f"{name}, test set: accuracy {test_accuracy:.4f}")
        row(name, quantized, test_accuracy)

    if not args.no_bf16:
        fg.manual_seed(args.seed)
        bf16_model = models.mnist_cnn()
        with fg.autocast("cpu", dtype="bf16"):
            trainer = train(bf16_model, x, y, validation, args, args.epochs, loss="cross_entropy")
        result = trainer.evaluate(xt, yt)
        _common.report("float32 MNIST CNN trained under bf16 autocast, test set", result)
        row("trained in bf16 autocast", bf16_model, result["accuracy"])

    base = rows[0]
    print(f"\n{'model':<28} {'accuracy':>8} {'vs fp32':>8} {'weights':>8} {'size KB':>8} {'images/s':>9} {'speedup':>7}")
    for r in rows:
        print(f"{r['model']:<28} {r['accuracy']:8.4f} {100 * (r['accuracy'] - base['accuracy']):+7.2f}p "
              f"{r['weights']:8d} {r['size_kb']:8.1f} {r['images_per_s']:9.0f} "
              f"{r['images_per_s'] / base['images_per_s']:6.2f}x")
    return {"rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
