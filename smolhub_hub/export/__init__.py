"""Writing SmolHub models in other libraries' formats.

The converters to and from Hugging Face transformers live with their architectures (`<Folder>/convert.py`,
named by each folder's `FAMILY.converter`): each has `hf_config(config)`, `to_hf(model) -> PreTrainedModel`
and `from_hf(hf_model) -> SmolHub model`. What is here needs only the transformers model they produce:
`gguf.py` writes one as a GGUF file for llama.cpp and ollama.
"""


def layer_name_pairs(top_map, block_map, n_layers: int, hf_layers: str) -> list[tuple]:
    """(ours, transformers', ...) name pairs: `top_map` as it is, then `block_map` repeated for every block, from
    `blocks.{i}.<ours>` to `<hf_layers>.{i}.<theirs>`; anything after the two names (e.g. a transform) is kept."""
    pairs = list(top_map)
    for i in range(n_layers):
        pairs += [(f"blocks.{i}.{a}", f"{hf_layers}.{i}.{b}", *rest) for a, b, *rest in block_map]
    return pairs
