"""BERT (Devlin et al., 2019) as Hugging Face's transformers builds it: BertModel and
BertForSequenceClassification with the same sub-module names, so a Hugging Face checkpoint folder
(config.json + model.safetensors) loads with from_pretrained(directory) and save_pretrained writes
one that transformers reads back. Weights are read and written by fusegrad.io's own safetensors
code (never pickle); nothing is downloaded.

Called like transformers' models: model(input_ids, attention_mask=None, token_type_ids=None,
labels=None) returning an object with .last_hidden_state / .pooler_output (BertModel) or .logits
and, given labels, .loss (BertForSequenceClassification). Attention runs on the flash-attention
kernels (one packed Q/K/V projection, one attention op over all heads); attention_mask (1 = token,
0 = padding) becomes the kernels' key-padding mask.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .. import io, nn
from .._backend import array_module, device_of, is_cupy, on_device, to_device
from ..nn import functional as F
from ..ops.activation import NAMES
from ..tensor import Tensor, cat

# Hugging Face's names of the tanh-approximated GELU; "gelu" is the exact (erf) one, as in fusegrad.
_HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    problem_type: str | None = None
    extra: dict = field(default_factory=dict)  # every other key of config.json, written back unchanged

    @classmethod
    def from_dict(cls, d: dict) -> BertConfig:
        d = dict(d)
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__ and k != "extra"}
        if "id2label" in d and "num_labels" not in known:
            known["num_labels"] = len(d["id2label"])
        return cls(**known, extra=d)

    @classmethod
    def from_json_file(cls, path) -> BertConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        d.update({k: v for k, v in self.extra.items() if k not in d})
        d.pop("num_labels")
        d.setdefault("model_type", "bert")
        d["id2label"] = self.extra.get("id2label") or {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        d["label2id"] = self.extra.get("label2id") or {v: int(k) for k, v in d["id2label"].items()}
        if d["problem_type"] is None:
            d.pop("problem_type")
        return d

    @property
    def activation(self) -> str:
        name = _HF_ACTIVATIONS.get(self.hidden_act, self.hidden_act)
        if name not in NAMES:
            raise ValueError(f"BertConfig: hidden_act {self.hidden_act!r} is not supported")
        return name


class ModelOutput(dict):
    """The fields a model returns, as attributes and as dict entries (like transformers' outputs)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _linear(cfg: BertConfig, n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.normal_(layer.weight, 0.0, cfg.initializer_range)
    nn.init.zeros_(layer.bias)
    return layer


def _embedding(cfg: BertConfig, rows: int, padding_idx=None) -> nn.Embedding:
    e = nn.Embedding(rows, cfg.hidden_size, padding_idx=padding_idx)
    nn.init.normal_(e.weight, 0.0, cfg.initializer_range)
    if padding_idx is not None:
        e.weight.data[padding_idx] = 0
    return e


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = _embedding(cfg, cfg.vocab_size, cfg.pad_token_id)
        self.position_embeddings = _embedding(cfg, cfg.max_position_embeddings)
        self.token_type_embeddings = _embedding(cfg, cfg.type_vocab_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        n, length = input_ids.shape
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"BERT: sequence length {length} exceeds max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}")
        table = self.word_embeddings.weight.data
        xp = array_module(table)
        with on_device(table):  # positions and default token types on the tables' device
            positions = xp.arange(length)
            if token_type_ids is None:
                token_type_ids = xp.zeros((n, length), np.int64)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        h = cfg.hidden_size
        if h % cfg.num_attention_heads:
            raise ValueError(f"BERT: hidden_size {h} is not a multiple of num_attention_heads {cfg.num_attention_heads}")
        self.num_heads, self.dropout_p = cfg.num_attention_heads, cfg.attention_probs_dropout_prob
        self.query, self.key, self.value = (_linear(cfg, h, h) for _ in range(3))

    def forward(self, x, mask):
        # One GEMM for the three projections (weights concatenated; gradients flow back to each).
        w = cat([self.query.weight, self.key.weight, self.value.weight], axis=0)
        b = cat([self.query.bias, self.key.bias, self.value.bias], axis=0)
        qkv = F.linear(x, w, b)
        p = self.dropout_p if self.training else 0.0
        return F.multi_head_attention(qkv, None, None, self.num_heads, mask=mask, dropout_p=p)


class BertOutputBlock(nn.Module):
    """dense -> dropout -> LayerNorm(residual + .): Hugging Face's BertSelfOutput and BertOutput."""

    def __init__(self, cfg: BertConfig, n_in: int):
        super().__init__()
        self.dense = _linear(cfg, n_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertOutputBlock(cfg, cfg.hidden_size)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = _linear(cfg, cfg.hidden_size, cfg.intermediate_size)
        self.activation = cfg.activation

    def forward(self, x):
        return self.dense(x, activation=self.activation)


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutputBlock(cfg, cfg.intermediate_size)

    def forward(self, x, mask):
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = _linear(cfg, cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden):
        return self.dense(hidden[:, 0], activation="tanh")


def _array(x):
    """x (a Tensor, an array or a list) as a NumPy or CUDA array."""
    a = x.data if isinstance(x, Tensor) else x
    return a if isinstance(a, np.ndarray) or is_cupy(a) else np.asarray(a)


def _key_padding_mask(attention_mask, shape, device: str):
    if attention_mask is None:
        return None
    m = _array(attention_mask)
    if m.shape != tuple(shape):
        raise ValueError(f"attention_mask: expected shape {tuple(shape)} like input_ids, got {m.shape}")
    if device_of(m) != device:  # the attention kernels take the mask on the activations' device
        m = to_device(m, device)
    return (m != 0)[:, None, None, :]


def _ids(x, name):
    a = _array(x)
    if a.ndim != 2 or a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer array (batch, length), got {a.dtype} {a.shape}")
    return a


class _Pretrained(nn.Module):
    """from_pretrained / save_pretrained for Hugging Face checkpoint folders."""

    base_prefix = ""  # the prefix of the BertModel's weights inside this model's state dict

    @classmethod
    def from_pretrained(cls, directory, **config_overrides):
        directory = os.fspath(directory)
        cfg = BertConfig.from_json_file(os.path.join(directory, CONFIG_NAME))
        for k, v in config_overrides.items():
            setattr(cfg, k, v)
        model = cls(cfg)
        weights = os.path.join(directory, WEIGHTS_NAME)
        if not os.path.exists(weights):
            raise FileNotFoundError(f"{cls.__name__}.from_pretrained: no {WEIGHTS_NAME} in {directory} "
                                    "(only safetensors checkpoints are read, never pickle)")
        model.load_hf_state_dict(io.load(weights))
        return model

    def load_hf_state_dict(self, state):
        """Loads a Hugging Face state dict: old gamma/beta names and a missing or extra "bert."
        prefix are mapped; buffers such as position_ids are ignored; a missing classifier head
        keeps its fresh initialisation (as transformers does). Returns the keys left at their
        initial values."""
        own = dict(self.named_parameters())
        renamed = {}
        for key, value in state.items():
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
            if key not in own and self.base_prefix and self.base_prefix + key in own:
                key = self.base_prefix + key
            elif key not in own and key.startswith("bert.") and key[5:] in own:
                key = key[5:]
            if key in own:
                renamed[key] = value.data if isinstance(value, Tensor) else value
        required = [k for k in own if k not in renamed and not k.startswith(("classifier.", "pooler.", "bert.pooler."))]
        if required:
            raise KeyError(f"{type(self).__name__}: the checkpoint lacks {required[:5]}"
                           f"{' ...' if len(required) > 5 else ''}")
        for key, arr in renamed.items():
            if tuple(arr.shape) != own[key].shape:
                raise ValueError(f"{type(self).__name__}: '{key}' has shape {tuple(arr.shape)} in the checkpoint "
                                 f"but {own[key].shape} in the model")
        self.load_state_dict(renamed, strict=False)
        return [k for k in own if k not in renamed]

    def save_pretrained(self, directory) -> None:
        """Writes config.json and model.safetensors (float32) that transformers' from_pretrained reads."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        cfg = self.config.to_dict()
        cfg["architectures"] = [type(self).__name__]
        with open(os.path.join(directory, CONFIG_NAME), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        io.save(self.state_dict(), os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})


class BertModel(_Pretrained):
    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        ids = _ids(input_ids, "input_ids")
        tt = None if token_type_ids is None else _ids(token_type_ids, "token_type_ids")
        x = self.embeddings(ids, tt)
        hidden = self.encoder(x, _key_padding_mask(attention_mask, ids.shape, device_of(x.data)))
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return ModelOutput(last_hidden_state=hidden, pooler_output=pooled)


class BertForSequenceClassification(_Pretrained):
    base_prefix = "bert."

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config, self.num_labels = config, config.num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.extra.get("classifier_dropout") or config.hidden_dropout_prob)
        self.classifier = _linear(config, config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            y = _array(labels)
            if self.num_labels == 1 or self.config.problem_type == "regression":
                loss = F.mse_loss(logits.reshape(-1) if self.num_labels == 1 else logits, Tensor(y.astype(np.float32)))
            else:
                loss = F.cross_entropy(logits, y.astype(np.int64))
        return ModelOutput(loss=loss, logits=logits)


def load_tokenizer(directory):
    """The folder's tokenizer through the `tokenizers` package (pip install fusegrad[text]): its
    tokenizer.json, else a WordPiece tokenizer from vocab.txt (lower-cased unless the config says
    otherwise). Nothing is downloaded."""
    try:
        import tokenizers  # noqa: PLC0415
    except ImportError:
        raise ImportError("load_tokenizer needs the `tokenizers` package: pip install tokenizers") from None
    directory = os.fspath(directory)
    path = os.path.join(directory, "tokenizer.json")
    if os.path.exists(path):
        return tokenizers.Tokenizer.from_file(path)
    vocab = os.path.join(directory, "vocab.txt")
    if not os.path.exists(vocab):
        raise FileNotFoundError(f"load_tokenizer: neither tokenizer.json nor vocab.txt in {directory}")
    lower = True
    cfg_path = os.path.join(directory, "tokenizer_config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            lower = json.load(f).get("do_lower_case", True)
    return tokenizers.BertWordPieceTokenizer(vocab, lowercase=lower)


def encode_batch(tokenizer, texts, max_length: int = 128):
    """(input_ids, attention_mask, token_type_ids) int64 arrays (batch, length) for a list of texts,
    truncated to max_length and padded to the longest."""
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    enc = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in enc], np.int64)
    return ids, np.array([e.attention_mask for e in enc], np.int64), np.array([e.type_ids for e in enc], np.int64)


__all__ = ["BertConfig", "BertModel", "BertForSequenceClassification", "load_tokenizer", "encode_batch"]
