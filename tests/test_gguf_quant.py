"""Our K-quant encoders produce bytes that the reference GGUF decoder (gguf-py) and diffusers decode."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

from multitalk_serve.engine.loading.gguf_quant import Q, quantize, tensor_type


@pytest.mark.parametrize(("qtype", "bound"), [(Q.Q4_K, 0.12), (Q.Q6_K, 0.03), (Q.Q8_0, 0.008)])
def test_round_trip_through_reference_decoders(qtype, bound):
    x = np.random.RandomState(0).standard_normal((6, 512)).astype(np.float32)
    x[0, :256] = 0.0  # an all-zero block must decode to zeros, not NaN
    x[1] *= 100.0  # scale independence
    q = quantize(x, qtype)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    assert q.dtype == np.uint8 and q.shape == (6, 512 // block * type_size)
    ref = gguf.quants.dequantize(q, qtype)
    assert np.isfinite(ref).all()
    np.testing.assert_array_equal(ref[0, :256], 0.0)
    rel = np.linalg.norm(ref - x, axis=1) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    assert rel.max() < bound, rel
    ours = dequantize_gguf_tensor(GGUFParameter(torch.from_numpy(q), quant_type=qtype)).float().numpy()
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-3 * np.abs(x).max())


def test_tensor_types_follow_the_community_wan_layout():
    assert tensor_type("blocks.0.modulation", (1, 6, 256), "Q8_0") == Q.F32
    assert tensor_type("patch_embedding.weight", (256, 36, 1, 2, 2), "Q4_K_M") == Q.F32
    assert tensor_type("blocks.0.self_attn.norm_q.weight", (256,), "Q8_0") == Q.F32
    assert tensor_type("blocks.0.self_attn.q.weight", (5120, 5120), "Q8_0") == Q.Q8_0
    assert tensor_type("blocks.0.self_attn.q.weight", (5120, 5120), "Q4_K_M") == Q.Q4_K
    assert tensor_type("blocks.0.self_attn.v.weight", (5120, 5120), "Q4_K_M") == Q.Q6_K
    assert tensor_type("blocks.0.ffn.2.weight", (5120, 13824), "Q4_K_M") == Q.Q6_K
    assert tensor_type("text_embedding.0.weight", (256, 64), "Q4_K_M") == Q.Q8_0  # rows not a multiple of 256
    with pytest.raises(ValueError, match="unsupported GGUF file type"):
        tensor_type("x.weight", (256, 256), "Q2_K")
