"""Fine-tune a BERT checkpoint folder for sentiment classification with the Trainer: AdamW, linear
warm-up then linear decay of the learning rate (per step), gradient clipping.

    python examples/bert_finetune.py --model DIR [--data-dir aclImdb] [--freeze-encoder]

--model: a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt or tokenizer.json;
read offline, tokenised with the `tokenizers` package). Without it the example builds a small
random BERT and its vocabulary in a temporary folder, writes it with save_pretrained and starts
from that folder. --data-dir: IMDB's aclImdb/ (train/ and test/, pos/ and neg/ of .txt files);
without it, a small offline set of template reviews the example generates. --freeze-encoder:
train only the pooler and the classifier head.
"""
import math
import os
import sys
import tempfile
from pathlib import Path

import _common
import numpy as np

import fusegrad as fg
from fusegrad import nn, optim
from fusegrad.models import BertConfig, BertForSequenceClassification
from fusegrad.models.bert import encode_batch, load_tokenizer
from fusegrad.optim.lr_scheduler import LRScheduler
from fusegrad.tensor import Tensor
from fusegrad.train import Trainer

POSITIVE = "great wonderful superb moving delightful brilliant charming fun beautiful excellent".split()
NEGATIVE = "awful boring dreadful dull terrible clumsy tedious bad ugly weak".split()
FILLER = "the film movie plot acting story cast was is really quite and very a this with its".split()


def synthetic_reviews(n, rng):
    """n short reviews whose label is the majority sentiment of their opinion words."""
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        major, minor = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        words = list(rng.choice(FILLER, 6)) + list(rng.choice(major, 2)) + list(rng.choice(minor, int(rng.integers(0, 2))))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def read_imdb(directory, split, limit=None):
    texts, labels = [], []
    for label, name in ((1, "pos"), (0, "neg")):
        files = sorted((Path(directory) / split / name).glob("*.txt"))[: None if limit is None else limit // 2]
        texts += [f.read_text(encoding="utf-8").replace("<br />", " ") for f in files]
        labels += [label] * len(files)
    if not texts:
        raise FileNotFoundError(f"no reviews under {directory}/{split}/pos and neg")
    order = np.random.default_rng(0).permutation(len(texts))
    return [texts[i] for i in order], np.array(labels)[order]


def tiny_checkpoint(folder):
    """A small random BERT with a word-level vocabulary of the synthetic reviews, saved as a
    Hugging Face folder."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEGATIVE + FILLER))
    Path(folder, "vocab.txt").parent.mkdir(parents=True, exist_ok=True)
    Path(folder, "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(folder)


def tokenize(folder, texts, max_length):
    """(N, 2, L) int64: input ids and attention mask, through `tokenizers` when installed, else by a
    whitespace look-up in vocab.txt (enough for the generated reviews)."""
    try:
        ids, mask, _ = encode_batch(load_tokenizer(folder), texts, max_length)
    except ImportError:
        vocab = {w: i for i, w in enumerate(Path(folder, "vocab.txt").read_text().split("\n"))}
        rows = [[2] + [vocab.get(w, 1) for w in t.lower().split()][: max_length - 2] + [3] for t in texts]
        length = max(map(len, rows))
        ids = np.array([r + [0] * (length - len(r)) for r in rows], np.int64)
        mask = (np.arange(length)[None, :] < np.array([len(r) for r in rows])[:, None]).astype(np.int64)
    return np.stack([ids, mask], axis=1)


class Classifier(nn.Module):
    """The Trainer hands a model one input: here the ids and the mask stacked as (N, 2, L)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, x):
        x = x.data if isinstance(x, Tensor) else x
        return self.bert(x[:, 0], attention_mask=x[:, 1]).logits


class WarmupLinear(LRScheduler):
    """Linear warm-up over `warmup` steps, then linear decay to 0 at `total` steps."""

    def __init__(self, optimizer, warmup, total):
        self.warmup, self.total = warmup, total
        super().__init__(optimizer)

    def lr_at(self, base_lr, step):
        if step < self.warmup:
            return base_lr * (step + 1) / self.warmup
        return base_lr * max(0.0, (self.total - step) / max(1, self.total - self.warmup))


class ClippingTrainer(Trainer):
    """Trainer.train_step with the gradients' total norm clipped before the optimizer step."""

    max_grad_norm = 1.0

    def train_step(self, xb, yb):
        self.optimizer.zero_grad()
        out = self.model(Tensor._wrap(xb, False))
        loss = self.loss(out, yb)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return out, loss


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=3, batch_size=16)
    p.add_argument("--model", default=None, help="a Hugging Face BERT folder (default: a small random one)")
    p.add_argument("--data-dir", default=None, help="IMDB's aclImdb/ folder (default: generated reviews)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--freeze-encoder", action="store_true")
    args = p.parse_args(argv)
    fg.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or os.path.join(tmp, "tiny-bert")
        if args.model is None:
            tiny_checkpoint(folder)
        if args.data_dir:
            (xt, yt), (xs, ys) = read_imdb(args.data_dir, "train", args.limit), read_imdb(args.data_dir, "test", args.limit)
        else:
            rng = np.random.default_rng(args.seed)
            n = args.limit or 2000
            (xt, yt), (xs, ys) = synthetic_reviews(n, rng), synthetic_reviews(max(n // 4, 50), rng)
        x_train, x_test = tokenize(folder, xt, args.max_length), tokenize(folder, xs, args.max_length)
        bert = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    if args.freeze_encoder:
        bert.bert.embeddings.requires_grad_(False)
        bert.bert.encoder.requires_grad_(False)
    model = Classifier(bert)
    trainable = [q for q in model.parameters() if q.requires_grad]
    lr = args.lr or (1e-3 if args.model is None or args.freeze_encoder else 3e-5)
    opt = optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    steps = args.epochs * math.ceil(len(x_train) * 0.9 / args.batch_size)
    trainer = ClippingTrainer(model, "cross_entropy", opt, device=args.device,
                              scheduler=WarmupLinear(opt, max(1, steps // 10), steps), scheduler_interval="step")
    history = trainer.fit(x_train, yt, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
                          verbose=args.verbose)
    result = trainer.evaluate(x_test, ys)
    _common.report("sentiment, test set", result)
    print(f"trainable tensors {len(trainable)} of {len(list(model.parameters()))}")
    return {"history": history.history, "accuracy": result["accuracy"], "loss": result["loss"],
            "trainable": len(trainable)}


if __name__ == "__main__":
    main(sys.argv[1:])
