"""Attention cases (family "attention"), CPU, 2 threads: the flash-attention kernels forward and
forward + backward at BERT-base's head shape (B=8, H=12, S=512, D=64), causal and not, against
PyTorch's scaled_dot_product_attention in the same run (through autograd as a user calls it, and
as the bare aten flash-attention calls, "torch_aten"); and a BERT-base-shaped encoder layer
(hidden 768, 12 heads, FFN 3072, S=128, B=8) forward + backward against PyTorch eager; and a
BERT-mini fine-tuning step against transformers' (where installed).

CUDA (device "cuda", skipped without a GPU): the same attention shapes, forward and forward +
backward, causal and not, on CuPy arrays (cuda/attention/, fp32 SIMT) against PyTorch's
scaled_dot_product_attention on CUDA tensors of the same memory (fp32, so PyTorch picks its
memory-efficient kernel; its flash kernel takes only fp16/bf16), bound by cuBLAS's fp32 peak.

On the CPU every sample is preceded by SPINNING_BASELINE_SETTLE_S of untimed calls of the same
candidate (bench/timer.py): NumPy's OpenBLAS and PyTorch's OpenMP workers keep spinning after a
call, and a sample taken right after one would share the two cores with them.

Work: GFLOP, counting the matrix products as FlashAttention's papers do: forward 4·B·H·Sq·Sk·D,
backward 2.5× that (its five products, the recomputed scores included); causal halves both.
"""
from __future__ import annotations

import numpy as np

from ... import nn, ops, optim, tensor
from ...random import manual_seed
from ..case import SPINNING_BASELINE_SETTLE_S, Case, optional_import

THREADS = 2


def _qkv(b, h, s, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, h, s, d), dtype=np.float32) for _ in range(3)]


def _numpy_forward(q, k, v, causal):
    def run():
        s = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / np.sqrt(q.shape[-1]))
        if causal:
            s += np.triu(np.full(s.shape[-2:], -np.inf, np.float32), 1)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        return s @ v
    return run


def _ours(q, k, v, g, out, causal: bool, backward: bool):
    """ops.attention into `out`, and with backward its attention_backward too (any device's arrays)."""
    if backward:
        def fwd_bwd():
            o, lse = ops.attention(q, k, v, causal=causal, return_lse=True, out=out)
            return ops.attention_backward(g, q, k, v, o, lse, causal=causal)
        return fwd_bwd
    return lambda: ops.attention(q, k, v, causal=causal, out=out)


def _torch_sdpa(torch, tq, tk, tv, tg, causal: bool, backward: bool):
    """PyTorch's scaled_dot_product_attention as a user calls it: forward under no_grad, or forward
    and backward through autograd (the upstream gradient tg)."""
    F = torch.nn.functional
    if backward:
        def autograd():
            xs = [t.detach().requires_grad_() for t in (tq, tk, tv)]
            F.scaled_dot_product_attention(*xs, is_causal=causal).backward(tg)
            return [x.grad for x in xs]
        return autograd

    def forward():
        with torch.no_grad():
            return F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    return forward


def _attention_case(b, h, s, d, causal: bool, backward: bool) -> Case:
    def setup():
        q, k, v = _qkv(b, h, s, d)
        g = np.random.default_rng(1).standard_normal(q.shape, dtype=np.float32)
        ours = _ours(q, k, v, g, np.empty_like(q), causal, backward)
        base = {} if backward else {"numpy": _numpy_forward(q, k, v, causal)}
        torch = optional_import("torch")
        if torch is not None:
            aten = torch.ops.aten
            tq, tk, tv, tg = (torch.from_numpy(a) for a in (q, k, v, g))
            base["torch"] = _torch_sdpa(torch, tq, tk, tv, tg, causal, backward)
            if backward:
                def bare():
                    o, lse = aten._scaled_dot_product_flash_attention_for_cpu(tq, tk, tv, 0.0, causal)
                    return aten._scaled_dot_product_flash_attention_for_cpu_backward(tg, tq, tk, tv, o, lse, 0.0,
                                                                                     causal)
                base["torch_aten"] = bare
        return ours, base

    flops = 4.0 * b * h * s * s * d * (3.5 if backward else 1.0) * (0.5 if causal else 1.0)
    kind = ("fwd_bwd" if backward else "fwd") + ("_causal" if causal else "")
    return Case(f"attention/{kind}/b{b}h{h}s{s}d{d}", "attention", "cpu", "GFLOP/s", flops, setup,
                limit="fma_GFLOPs", threads=THREADS, settle_s=SPINNING_BASELINE_SETTLE_S)


def _encoder_case(batch, length, hidden, heads, ffn) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, length, hidden), dtype=np.float32)
        g = rng.standard_normal((batch, length, hidden), dtype=np.float32)
        manual_seed(0)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, activation="gelu")

        def ours():
            xt = tensor(x, requires_grad=True)
            layer(xt).backward(g)
            layer.zero_grad()
        base = {}
        torch = optional_import("torch")
        if torch is not None:
            torch.manual_seed(0)
            theirs = torch.nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, activation="gelu",
                                                      batch_first=True)
            tx, tg = torch.from_numpy(x), torch.from_numpy(g)

            def eager():
                xt = tx.detach().requires_grad_()
                theirs(xt).backward(tg)
                theirs.zero_grad()
            base["torch"] = eager
        return ours, base

    return Case(f"attention/encoder_layer_fwd_bwd/h{hidden}x{heads}_ff{ffn}_s{length}_b{batch}", "attention", "cpu",
                "samples/s", batch, setup, threads=THREADS, settle_s=SPINNING_BASELINE_SETTLE_S)


def _bert_mini_step_case(batch, length) -> Case:
    """One fine-tuning step (forward, loss, backward, AdamW) of BERT-mini (4 layers, hidden 256, 4
    heads, FFN 1024) for sequence classification, against transformers' PyTorch model built from
    the same random config and weights (eager attention and SDPA both)."""
    def setup():
        from ...models import BertConfig, BertForSequenceClassification

        cfg = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                   intermediate_size=1024, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
        rng = np.random.default_rng(0)
        ids = rng.integers(1, cfg["vocab_size"], (batch, length))
        mask = np.ones((batch, length), np.int64)
        mask[: batch // 2, length * 3 // 4:] = 0
        labels = rng.integers(0, 2, batch)
        manual_seed(0)
        ours_model = BertForSequenceClassification(BertConfig(**cfg))
        opt = optim.AdamW(ours_model.parameters(), lr=2e-5)

        def ours():
            opt.zero_grad()
            ours_model(ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
        base = {}
        torch, transformers = optional_import("torch"), optional_import("transformers")
        if torch is not None and transformers is not None:
            tids, tmask, tlabels = (torch.from_numpy(a) for a in (ids, mask, labels))
            state = {k: torch.from_numpy(v.numpy().copy()) for k, v in ours_model.state_dict().items()}
            for impl in ("sdpa", "eager"):
                model = transformers.BertForSequenceClassification(
                    transformers.BertConfig(**cfg, attn_implementation=impl))
                model.load_state_dict(state, strict=False)
                model.train()
                topt = torch.optim.AdamW(model.parameters(), lr=2e-5)

                def step(model=model, topt=topt):
                    topt.zero_grad()
                    model(tids, attention_mask=tmask, labels=tlabels).loss.backward()
                    topt.step()
                base["transformers" if impl == "sdpa" else "transformers_eager"] = step
        return ours, base

    return Case(f"attention/bert_mini_finetune_step/s{length}_b{batch}", "attention", "cpu", "samples/s", batch,
                setup, threads=THREADS, settle_s=SPINNING_BASELINE_SETTLE_S)


def _cuda_attention_case(b, h, s, d, causal: bool, backward: bool) -> Case:
    def setup():
        import cupy as cp

        cp.random.seed(0)
        q, k, v, g = (cp.random.standard_normal((b, h, s, d), dtype=cp.float32) for _ in range(4))
        ours = _ours(q, k, v, g, cp.empty_like(q), causal, backward)
        base = {}
        torch = optional_import("torch")
        if torch is not None and torch.cuda.is_available():
            tq, tk, tv, tg = (torch.from_dlpack(a) for a in (q, k, v, g))
            base["torch"] = _torch_sdpa(torch, tq, tk, tv, tg, causal, backward)
        return ours, base

    flops = 4.0 * b * h * s * s * d * (3.5 if backward else 1.0) * (0.5 if causal else 1.0)
    kind = ("fwd_bwd" if backward else "fwd") + ("_causal" if causal else "")
    return Case(f"attention/cuda_{kind}/b{b}h{h}s{s}d{d}", "attention", "cuda", "GFLOP/s", flops, setup,
                limit="cublas_fp32_TFLOPs", note="fp32 vs torch SDPA fp32")


def cases():
    return [
        _attention_case(8, 12, 512, 64, False, False),
        _attention_case(8, 12, 512, 64, True, False),
        _attention_case(8, 12, 512, 64, False, True),
        _attention_case(8, 12, 512, 64, True, True),
        _encoder_case(8, 128, 768, 12, 3072),
        _bert_mini_step_case(32, 128),
        _cuda_attention_case(8, 12, 512, 64, False, False),
        _cuda_attention_case(8, 12, 512, 64, True, False),
        _cuda_attention_case(8, 12, 512, 64, False, True),
        _cuda_attention_case(8, 12, 512, 64, True, True),
    ]
