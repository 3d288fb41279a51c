"""One entry point loads every published layout to the same model, and bad checkpoints fail with named causes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter, dequantize_gguf_tensor
from safetensors.torch import load_file, save_file

from multitalk_serve.engine.errors import CheckpointError
from multitalk_serve.engine.loading.layouts import WanDims, multitalk_shapes, original_base_shapes
from multitalk_serve.engine.loading.transformer import (
    _to_model_names,
    build_empty_model,
    load_transformer,
    resolve_transformer,
)
from multitalk_serve.engine.loading.weights import TensorRef
from multitalk_serve.engine.models.transformer import Fp32Linear
from multitalk_serve.forward_check import random_inputs
from multitalk_serve.tiny import (
    DIFFUSERS_DIR,
    GGUF_NAMES,
    MULTITALK_DIR,
    ORIGINAL_DIR,
    link_multitalk_into_original,
    transformer_tensors,
)

FP32 = torch.float32


def outputs(model, seed=0):
    inputs = random_inputs(model, 2, frames=9, height=64, width=96, dtype=FP32, device="cpu", seed=seed)
    with torch.no_grad():
        return model(**inputs).sample


@pytest.fixture(scope="module")
def reference(tiny_root):
    return load_transformer(tiny_root / ORIGINAL_DIR, tiny_root / MULTITALK_DIR, dtype=FP32)


def copy_original(tiny_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_root / ORIGINAL_DIR, tmp_path / ORIGINAL_DIR)
    shutil.copytree(tiny_root / MULTITALK_DIR, tmp_path / MULTITALK_DIR)
    return tmp_path / ORIGINAL_DIR


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# --- the published key sets, at full size -----------------------------------------------------------------------
def test_full_size_key_sets_map_exactly_onto_the_model():
    dims = WanDims()  # Wan2.1-I2V-14B + MeiGen-MultiTalk
    base, audio = original_base_shapes(dims), multitalk_shapes(dims)
    assert len(base) == 1303 and len(audio) == 330
    assert sum(math.prod(s) for s in base.values()) == 16_394_878_784
    assert sum(math.prod(s) for s in audio.values()) == 2_487_168_000
    refs = {k: TensorRef(Path("x"), k, 0, 0, FP32, s) for k, s in {**base, **audio}.items()}
    model = build_empty_model(dims)  # meta device: no memory
    expected = {k: tuple(p.shape) for k, p in model.named_parameters()}
    assert {k: r.shape for k, r in _to_model_names(refs).items()} == expected


# --- every layout, the same model ----------------------------------------------------------------------------------
def test_original_and_diffusers_layouts_give_identical_models(tiny_root, reference):
    diffusers_pipeline = load_transformer(tiny_root / DIFFUSERS_DIR, tiny_root / MULTITALK_DIR, dtype=FP32)
    diffusers_folder = load_transformer(
        tiny_root / DIFFUSERS_DIR / "transformer", tiny_root / MULTITALK_DIR / "multitalk.safetensors", dtype=FP32
    )
    assert_same_weights(reference, diffusers_pipeline)
    assert_same_weights(reference, diffusers_folder)
    assert torch.equal(outputs(reference), outputs(diffusers_pipeline))


def test_original_layout_with_multitalk_index_linked_in(tiny_root, tmp_path, reference):
    """MultiTalk's README: replace the base index by MultiTalk's and link multitalk.safetensors into the folder."""
    copy_original(tiny_root, tmp_path)
    wan = link_multitalk_into_original(tmp_path)
    source = resolve_transformer(wan)
    assert source.layout == "original" and any(f.name == "multitalk.safetensors" for f in source.files)
    assert_same_weights(reference, load_transformer(wan, dtype=FP32))


def test_single_file_with_comfy_prefix(tiny_root, tmp_path, reference):
    base, _ = transformer_tensors(reference_dims(tiny_root))
    save_file({f"model.diffusion_model.{k}": v for k, v in base.items()}, tmp_path / "wan_i2v.safetensors")
    model = load_transformer(tmp_path / "wan_i2v.safetensors", tiny_root / MULTITALK_DIR, dtype=FP32)
    assert_same_weights(reference, model)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_single_file_in_other_storage_dtypes(tiny_root, tmp_path, dtype):
    """Repacked checkpoints come in fp16, bf16 and fp8 (e4m3fn): cast on the way in, like the fp32 originals."""
    base, _ = transformer_tensors(reference_dims(tiny_root))
    stored = {k: v.to(dtype) for k, v in base.items()}
    save_file(stored, tmp_path / "wan.safetensors")
    model = load_transformer(tmp_path / "wan.safetensors", tiny_root / MULTITALK_DIR, dtype=torch.bfloat16)
    params = dict(model.named_parameters())
    expected = stored["blocks.0.ffn.0.weight"].to(torch.bfloat16)
    assert torch.equal(params["blocks.0.ffn.net.0.proj.weight"], expected)
    assert torch.isfinite(outputs_bf16(model)).all()


def test_multitalk_weights_as_gguf(tiny_root, tmp_path, reference):
    from multitalk_serve.engine.loading.gguf_quant import write_wan_gguf

    _, audio = transformer_tensors(reference_dims(tiny_root))
    write_wan_gguf(tmp_path / "multitalk-Q8_0.gguf", {k: v.numpy() for k, v in audio.items()}, "Q8_0")
    model = load_transformer(tiny_root / ORIGINAL_DIR, tmp_path / "multitalk-Q8_0.gguf", dtype=FP32)
    assert isinstance(dict(model.named_modules())["blocks.0.audio_cross_attn.q_linear"], GGUFLinear)
    rel = (outputs(model) - outputs(reference)).norm() / outputs(reference).norm()
    assert rel < 0.06


def reference_dims(tiny_root: Path) -> WanDims:
    return WanDims(**{**json.loads((tiny_root / "TINY.json").read_text())["dims"], "patch_size": (1, 2, 2)})


def test_default_dtype_is_bf16_with_fp32_norms_and_modulation(tiny_root):
    model = load_transformer(tiny_root / DIFFUSERS_DIR, tiny_root / MULTITALK_DIR)
    params = dict(model.named_parameters())
    assert params["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16
    assert params["blocks.0.audio_cross_attn.kv_linear.weight"].dtype == torch.bfloat16
    assert params["audio_proj.proj1.weight"].dtype == torch.bfloat16
    for fp32 in (
        "blocks.0.norm2.weight",
        "blocks.0.norm_x.weight",
        "blocks.0.scale_shift_table",
        "scale_shift_table",
        "condition_embedder.time_embedder.linear_1.weight",
    ):
        assert params[fp32].dtype == torch.float32, fp32
    # The time projection and the output head keep bf16 weights (as the official holds them) but compute in fp32,
    # and the velocity comes back in fp32 (the official forward's autocast; tests/test_fidelity.py).
    assert params["condition_embedder.time_proj.weight"].dtype == torch.bfloat16
    assert params["proj_out.weight"].dtype == torch.bfloat16
    out = outputs_bf16(model)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def outputs_bf16(model):
    inputs = random_inputs(model, 2, frames=9, height=64, width=96, dtype=torch.bfloat16, device="cpu")
    with torch.no_grad():
        return model(**inputs).sample


# --- GGUF ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("file_type", list(GGUF_NAMES))
def test_gguf_keeps_linears_quantized_and_computes_like_its_dequantized_weights(tiny_root, reference, file_type):
    path = tiny_root / GGUF_NAMES[file_type]
    model = load_transformer(path, tiny_root / MULTITALK_DIR, dtype=FP32)
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    modules = dict(model.named_modules())
    # quantized in the file -> still quantized in memory (except fp32-kept modules, dequantized at load)
    assert isinstance(modules["blocks.0.attn1.to_q"], GGUFLinear)
    assert isinstance(modules["blocks.0.attn1.to_q"].weight, GGUFParameter)
    assert modules["blocks.0.attn1.to_q"].weight.dtype == torch.uint8
    assert not isinstance(modules["condition_embedder.time_embedder.linear_1"], GGUFLinear)
    assert not isinstance(modules["blocks.0.audio_cross_attn.q_linear"], GGUFLinear)  # audio layers: plain
    # time projection and output head: quantized weights kept, dequantized and computed in fp32 by the layer itself
    for name in ("condition_embedder.time_proj", "proj_out"):
        assert isinstance(modules[name], Fp32Linear) and isinstance(modules[name].weight, GGUFParameter), name
    assert types["blocks.0.self_attn.q.weight"] == ("Q8_0" if file_type == "Q8_0" else "Q4_K")
    if file_type == "Q4_K_M":
        assert types["blocks.0.ffn.2.weight"] == "Q6_K"
    assert types["patch_embedding.weight"] == "F32" and types["blocks.0.modulation"] == "F32"

    # The same model with every weight decoded up front (diffusers' GGUF decoder, as the layers use at run time).
    plain = load_transformer(tiny_root / ORIGINAL_DIR, tiny_root / MULTITALK_DIR, dtype=FP32)
    names = {old: new for new, old in _to_model_names({t.name: t.name for t in reader.tensors}).items()}
    with torch.no_grad():
        params = dict(plain.named_parameters())
        for t in reader.tensors:
            param = params[names[t.name]]
            raw = torch.from_numpy(np.array(t.data))
            if t.tensor_type.name not in ("F32", "F16"):
                raw = dequantize_gguf_tensor(GGUFParameter(raw, quant_type=t.tensor_type))
            param.copy_(raw.float().reshape(param.shape))
    torch.testing.assert_close(outputs(model), outputs(plain), atol=1e-5, rtol=1e-5)
    # and close to the unquantized model, as far as the format allows
    rel = (outputs(model) - outputs(reference)).norm() / outputs(reference).norm()
    assert rel < (0.06 if file_type == "Q8_0" else 0.4)


# --- errors that name the problem -------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_transformer(tmp_path / "nope")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a transformer checkpoint"):
        load_transformer(tmp_path)


def test_missing_multitalk(tiny_root):
    with pytest.raises(CheckpointError, match="no MultiTalk audio weights: pass multitalk="):
        load_transformer(tiny_root / ORIGINAL_DIR)


def test_multitalk_argument_is_not_multitalk(tiny_root):
    shard = tiny_root / ORIGINAL_DIR / "diffusion_pytorch_model-00001-of-00003.safetensors"
    with pytest.raises(CheckpointError, match="holds non-audio tensors"):
        load_transformer(tiny_root / ORIGINAL_DIR, shard)


def test_missing_shard_file(tiny_root, tmp_path):
    wan = copy_original(tiny_root, tmp_path)
    (wan / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing shard files .*00002-of-00003"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


def rewrite_shard(wan: Path, edit) -> None:
    shard = wan / "diffusion_pytorch_model-00001-of-00003.safetensors"
    tensors = load_file(shard)
    edit(tensors)
    save_file(tensors, shard)
    index_path = wan / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard.name}
    index["weight_map"].update(dict.fromkeys(tensors, shard.name))
    index_path.write_text(json.dumps(index))


def test_missing_tensor(tiny_root, tmp_path):
    wan = copy_original(tiny_root, tmp_path)
    rewrite_shard(wan, lambda t: t.pop("patch_embedding.bias"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensors: patch_embedding.bias"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


def test_index_names_a_tensor_the_file_lacks(tiny_root, tmp_path):
    wan = copy_original(tiny_root, tmp_path)
    shard = wan / "diffusion_pytorch_model-00001-of-00003.safetensors"
    tensors = load_file(shard)
    tensors.pop("patch_embedding.bias")
    save_file(tensors, shard)
    with pytest.raises(CheckpointError, match=r"the index places these tensors here but the file lacks them: patch"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


def test_unexpected_tensor(tiny_root, tmp_path):
    wan = copy_original(tiny_root, tmp_path)
    rewrite_shard(wan, lambda t: t.update({"blocks.0.extra.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected 1 tensors: blocks.0.extra.weight"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


def test_wrong_shape(tiny_root, tmp_path):
    wan = copy_original(tiny_root, tmp_path)
    rewrite_shard(wan, lambda t: t.update({"patch_embedding.bias": torch.zeros(7)}))
    with pytest.raises(CheckpointError, match=r"wrong shape: patch_embedding.bias \[7\] \(model expects \[256\]\)"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


def test_config_that_contradicts_the_weights(tiny_root, tmp_path):
    wan = copy_original(tiny_root, tmp_path)
    config = json.loads((wan / "config.json").read_text())
    (wan / "config.json").write_text(json.dumps({**config, "num_layers": 40, "ffn_dim": 13824}))
    with pytest.raises(CheckpointError, match=r"ffn_dim=13824 but the weights have 512; num_layers=40 but"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


@pytest.mark.parametrize("text_len", [256, 1024])
def test_config_text_len_other_than_512_is_refused(tiny_root, tmp_path, text_len):
    """The official model pads the prompt to ``text_len`` tokens and attends to all of them; ours always uses 512.
    A config we accept must give the model it describes: any other value is refused, naming the key."""
    wan = copy_original(tiny_root, tmp_path)
    config = json.loads((wan / "config.json").read_text())
    assert config["text_len"] == 512  # the published value, which loads (every other test)
    (wan / "config.json").write_text(json.dumps({**config, "text_len": text_len}))
    with pytest.raises(CheckpointError, match=rf"config.json: text_len={text_len} is not supported.*exactly 512 text"):
        resolve_transformer(wan, tmp_path / MULTITALK_DIR)
    with pytest.raises(CheckpointError, match=rf"text_len={text_len}"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


def test_diffusers_config_stating_a_text_len_is_held_to_512_too(tiny_root, tmp_path):
    transformer = tmp_path / "transformer"
    shutil.copytree(tiny_root / DIFFUSERS_DIR / "transformer", transformer)
    config = json.loads((transformer / "config.json").read_text())
    (transformer / "config.json").write_text(json.dumps({**config, "text_len": 226}))
    with pytest.raises(CheckpointError, match=r"text_len=226 is not supported"):
        resolve_transformer(transformer, tiny_root / MULTITALK_DIR)


def test_text_to_video_model_is_refused(tiny_root, tmp_path):
    base, _ = transformer_tensors(reference_dims(tiny_root).replace(in_dim=16))
    save_file(base, tmp_path / "t2v.safetensors")
    with pytest.raises(CheckpointError, match="needs the image-to-video model"):
        load_transformer(tmp_path / "t2v.safetensors", tiny_root / MULTITALK_DIR)


def test_truncated_download(tiny_root, tmp_path):
    wan = copy_original(tiny_root, tmp_path)
    shard = wan / "diffusion_pytorch_model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"00003-of-00003.safetensors: file ends inside tensor"):
        load_transformer(wan, tmp_path / MULTITALK_DIR)


def test_multitalk_weights_of_another_size(tiny_root, tmp_path):
    _, audio = transformer_tensors(reference_dims(tiny_root).replace(dim=128, num_heads=1))
    save_file(audio, tmp_path / "multitalk.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong shape: .*audio_cross_attn"):
        load_transformer(tiny_root / ORIGINAL_DIR, tmp_path / "multitalk.safetensors")
