"""fusegrad.models.BertModel / BertForSequenceClassification against transformers' PyTorch BERT
built offline from a small random config: from_pretrained reads its save_pretrained folder with
the same logits and the same loss gradient; transformers reads ours back. Skipped where
transformers is not installed; the config and checkpoint plumbing is tested without it."""
import json

import numpy as np
import pytest

from fusegrad import models
from fusegrad.models.bert import BertConfig

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)


def _inputs(rng, n=3, length=11, vocab=99):
    ids = rng.integers(1, vocab, (n, length))
    mask = np.ones((n, length), np.int64)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    types = np.zeros((n, length), np.int64)
    types[:, 5:] = 1
    return ids, mask, types


def test_save_and_load_round_trip(rng, tmp_path):
    cfg = BertConfig(**TINY, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = models.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["BertForSequenceClassification"] and len(saved["id2label"]) == 3
    again = models.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, types = _inputs(rng)
    a = model(ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    b = again(ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    np.testing.assert_array_equal(a, b)
    base = models.BertModel.from_pretrained(tmp_path)  # the "bert." prefix is stripped
    assert base(ids).last_hidden_state.shape == (3, 11, 32)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(np.zeros((1, 65), np.int64))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        (tmp_path / "model.safetensors").unlink()
        models.BertModel.from_pretrained(tmp_path)


@pytest.fixture
def hf_model(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**TINY, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # random LayerNorm parameters and biases, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    return torch, transformers, model, tmp_path / "hf"


def test_logits_and_loss_gradient_match_transformers(rng, hf_model):
    torch, _, theirs, folder = hf_model
    ours = models.BertForSequenceClassification.from_pretrained(folder).eval()
    ids, mask, types = _inputs(rng)
    labels = np.array([0, 2, 1])
    out = ours(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    ref = theirs(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), token_type_ids=torch.from_numpy(types),
                 labels=torch.from_numpy(labels))
    np.testing.assert_allclose(out.logits.numpy(), ref.logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.loss.item(), ref.loss.item(), rtol=1e-5)
    out.loss.backward()
    ref.loss.backward()
    params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.grad is None:
            continue
        np.testing.assert_allclose(params[name].grad.numpy(), p.grad.numpy(), rtol=2e-3, atol=2e-5, err_msg=name)


def test_transformers_reads_our_checkpoint(rng, hf_model, tmp_path):
    torch, transformers, theirs, folder = hf_model
    ours = models.BertForSequenceClassification.from_pretrained(folder).eval()
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "ours").eval()
    ids, mask, types = _inputs(rng)
    with torch.no_grad():
        want = back(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    np.testing.assert_allclose(ours(ids, attention_mask=mask).logits.numpy(), want, rtol=1e-4, atol=1e-5)


def test_tokenizer_from_vocab_txt(tmp_path):
    pytest.importorskip("tokenizers")
    from fusegrad.models.bert import encode_batch, load_tokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "great", "##ly"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    ids, mask, types = encode_batch(load_tokenizer(tmp_path), ["The film was great", "greatly"], max_length=16)
    assert ids.tolist() == [[2, 5, 6, 7, 8, 3], [2, 8, 9, 3, 0, 0]]
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]] and types.shape == ids.shape
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_tokenizer(tmp_path / "nowhere")
