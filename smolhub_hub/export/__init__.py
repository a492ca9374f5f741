"""Writing SmolHub models in other libraries' formats.

The converters to and from Hugging Face transformers live with their architectures (`<Folder>/convert.py`,
named by each folder's `FAMILY.converter`): each has `hf_config(config)`, `to_hf(model) -> PreTrainedModel`
and `from_hf(hf_model) -> SmolHub model`. What is here needs only the transformers model they produce:
`gguf.py` writes one as a GGUF file for llama.cpp and ollama.
"""
