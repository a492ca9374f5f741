"""`smolhub export --format gguf`: one .gguf file for llama.cpp, ollama and transformers' `gguf_file=` loader.

The file is written from the model's transformers export (`to_hf`), tensor names translated by gguf-py's
own map (`gguf_names`), so it follows llama.cpp's convert_hf_to_gguf.py; reading a GGUF back is the same
map inverted plus the inverse of `to_gguf_layout`. Two layout changes, both undone by transformers' loader:

  - Llama: llama.cpp rotates adjacent pairs (x_2i, x_2i+1), transformers' Llama half-split pairs
    (x_i, x_i+d/2); the rows of q and k are reordered per head (`permute_rope_rows`) to match.
  - GPT-2: transformers' Conv1D stores a block's matrices (in, out); GGUF stores (out, in).

Supported: the architectures that both llama.cpp and transformers' GGUF loader read — Llama (StoryLlama)
and GPT-2 (SmolTransformer with LayerNorm). Mixtral and DeepseekV3 are refused: llama.cpp has them, but
transformers cannot load them from GGUF, so the export could not be checked here.

The tokenizer is declared as llama.cpp expects a byte-level BPE: `tokenizer.ggml.model = "gpt2"`, and the
pre-tokenizer "gpt-2", llama.cpp's name for GPT-2's split regex, which is what tokenizers' `ByteLevel`
(use_regex) applies; any other pre-tokenizer is refused rather than declared wrongly. Model rows beyond
the tokenizer's ids get placeholder tokens `[PAD<i>]` (type UNUSED), as llama.cpp's converter writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from smolhub_hub.errors import UserError
from smolhub_hub.extras import require

ARCHITECTURES = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt2"}  # transformers class -> GGUF architecture
OUTTYPES = ("f16", "q8_0")
PRE_TOKENIZER = "gpt-2"
# What llama.cpp splits text with for PRE_TOKENIZER (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_GPT2): GPT-2's rule.
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
Q8_BLOCK = 32  # q8_0 quantizes rows in blocks of 32 values; other rows stay f16, as llama.cpp's converter does


def _gguf():
    return require("gguf", "--format gguf")


def check_supported(family: str, config) -> str:
    """The GGUF architecture of a `family` model with `config`, or a UserError naming the fix (nothing is written
    before)."""
    from smolhub_hub.registry import get_family

    fam = get_family(family)
    if fam.hf_architecture not in ARCHITECTURES:
        raise UserError(f"no GGUF export for {family}: llama.cpp and transformers' GGUF loader both read only "
                        f"{' and '.join(ARCHITECTURES)} models; use --format hf")
    hf = fam.converter_module().hf_config(config)  # e.g. an RMSNorm SmolTransformer has no GPT-2 form
    arch = ARCHITECTURES[fam.hf_architecture]
    if arch == "gpt2" and hf.activation_function != "gelu_new":
        raise UserError(f"llama.cpp's GPT-2 uses the tanh GELU; this {family} was trained with the exact one "
                        "(--gelu-approximate none): use --format hf")
    return arch


def gguf_names(arch: str, n_layers: int, hf_names) -> dict[str, str]:
    """transformers tensor name -> GGUF tensor name, from gguf-py's map (invert it to read a GGUF)."""
    gguf = _gguf()
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.get_tensor_name_map(arch_id, n_layers)
    names = {}
    for name in hf_names:
        names[name] = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if names[name] is None:
            raise ValueError(f"gguf-py has no {arch} name for tensor {name}")
    return names


def permute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Per head, half-split rows (0..d/2-1, d/2..d-1) -> interleaved rows (0, d/2, 1, d/2+1, ...)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def to_gguf_layout(arch: str, gguf_name: str, w: torch.Tensor, hf_config) -> torch.Tensor:
    if arch == "llama" and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
        q = gguf_name.endswith("attn_q.weight")
        return permute_rope_rows(w, hf_config.num_attention_heads if q else hf_config.num_key_value_heads)
    if arch == "gpt2" and gguf_name.startswith("blk.") and w.dim() == 2:  # Conv1D
        return w.t()
    return w


def encode_tensor(w: np.ndarray, outtype: str, keep_f32: bool = False):
    """(data, ggml type) as the file stores `w`: vectors (and `keep_f32` matrices) in f32, matrices in f16 or
    q8_0 (rows whose length is not a multiple of 32 in f16), as llama.cpp's converter does."""
    gguf = _gguf()
    types = gguf.GGMLQuantizationType
    if w.ndim == 1 or keep_f32:
        return w.astype(np.float32), types.F32
    if outtype == "q8_0" and w.shape[-1] % Q8_BLOCK == 0:
        return gguf.quants.quantize(w, types.Q8_0), types.Q8_0
    return w.astype(np.float16), types.F16


# --- tokenizer -------------------------------------------------------------------------------------
def pre_tokenizer_name(tok) -> str:
    """llama.cpp's name for this tokenizer's split rule, or a UserError naming what is unsupported."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if (spec["model"].get("type") == "BPE" and spec.get("normalizer") is None and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True) and not pre.get("add_prefix_space", False)):
        return PRE_TOKENIZER
    raise UserError("the GGUF export declares byte-level BPE tokenizers with GPT-2's pre-tokenizer (SmolHub's "
                    f"--tokenizer bpe, GPT-2's); this one is a {spec['model'].get('type')} with pre-tokenizer "
                    f"{pre.get('type')}: use --format hf")


def vocabulary(tok, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) as GGUF stores them, padded to the model's `vocab_size` rows."""
    gguf = _gguf()
    by_id = {i: t for t, i in tok.get_vocab().items()}
    special = set(tok.all_special_ids)
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]"), types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i]), types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    return tokens, types, [m if isinstance(m, str) else " ".join(m) for m in merges]


def _add_tokenizer(writer, tok, vocab_size: int):
    from smolhub_hub.hf_folder import special_token_ids

    tokens, types, merges = vocabulary(tok, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tok))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    ids = special_token_ids(tok)
    writer.add_bos_token_id(ids["bos_token_id"])
    writer.add_eos_token_id(ids["eos_token_id"])
    writer.add_pad_token_id(ids["pad_token_id"])
    writer.add_add_bos_token(False)  # SmolHub models were trained without one: documents are joined by EOS
    writer.add_add_eos_token(False)
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)


# --- hyperparameters -------------------------------------------------------------------------------
def _add_hyperparameters(writer, arch: str, h):
    if arch == "llama":
        writer.add_context_length(h.max_position_embeddings)
        writer.add_embedding_length(h.hidden_size)
        writer.add_block_count(h.num_hidden_layers)
        writer.add_feed_forward_length(h.intermediate_size)
        writer.add_head_count(h.num_attention_heads)
        writer.add_head_count_kv(h.num_key_value_heads)
        writer.add_rope_dimension_count(h.head_dim)
        writer.add_rope_freq_base(h.rope_parameters["rope_theta"])
        writer.add_layer_norm_rms_eps(h.rms_norm_eps)
    else:
        writer.add_context_length(h.n_positions)
        writer.add_embedding_length(h.n_embd)
        writer.add_block_count(h.n_layer)
        writer.add_feed_forward_length(h.n_inner or 4 * h.n_embd)
        writer.add_head_count(h.n_head)
        writer.add_layer_norm_eps(h.layer_norm_epsilon)
    writer.add_vocab_size(h.vocab_size)


def write_gguf(model, path: Path, outtype: str = "f16", name: str = "") -> Path:
    """Write `model` (a SmolHub model with `.tokenizer`) to the GGUF file `path`."""
    from smolhub_hub.model_card import license_of
    from smolhub_hub.registry import get_family

    gguf = _gguf()
    family = model.checkpoint_config["family"]
    arch = check_supported(family, model.config)
    if outtype not in OUTTYPES:
        raise UserError(f"--outtype {outtype}: choose one of {', '.join(OUTTYPES)}")
    pre_tokenizer_name(model.tokenizer)  # refuse before any work
    hf = get_family(family).converter_module().to_hf(model)
    state = {k: v for k, v in hf.state_dict().items() if not (k == "lm_head.weight" and hf.config.tie_word_embeddings)}
    names = gguf_names(arch, hf.config.num_hidden_layers, state)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name or family)
    writer.add_license(license_of(model.checkpoint_config.get("data", {})))
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hyperparameters(writer, arch, hf.config)
    _add_tokenizer(writer, model.tokenizer, hf.config.vocab_size)
    for hf_name, w in state.items():
        w = to_gguf_layout(arch, names[hf_name], w.detach().float(), hf.config).contiguous().numpy()
        data, ggml_type = encode_tensor(w, outtype, keep_f32=names[hf_name].startswith("position_embd"))
        writer.add_tensor(names[hf_name], data, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def ollama_modelfile(model, gguf_file: str) -> str:
    """`ollama create NAME -f Modelfile`: plain-text continuation, stopping at EOS, with the model's context."""
    return (f"FROM ./{gguf_file}\n"
            'TEMPLATE "{{ .Prompt }}"\n'
            f'PARAMETER stop "{model.tokenizer.eos_token}"\n'
            f"PARAMETER num_ctx {model.max_seq_len}\n"
            "PARAMETER temperature 0.7\n")
