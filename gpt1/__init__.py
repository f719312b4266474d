"""gpt1: GPT-1 (Radford et al., 2018) in PyTorch.

The pipeline, module by module: tokenizer (text -> ids) -> data (corpus -> memory-mapped ids) -> model (the
decoder) -> pretrain (generative pre-training) -> generate (sampling); convert moves weights between gpt1,
Hugging Face and the original OpenAI release. The `gpt1` command is a thin layer over these functions.
"""

from .checkpoint import load_model, save_model
from .convert import convert
from .errors import UserError
from .generate import generate, generate_text
from .model import GPT, GPTConfig, KVCache, preset_config

__version__ = "0.1.0"


def load_tokenizer(directory):
    """The GPT-1 text encoder from a folder holding encoder_bpe_*.json and vocab_*.bpe."""
    from .tokenizer import load_tokenizer as _load  # imports spaCy, which takes a moment

    return _load(directory)


__all__ = ["GPT", "GPTConfig", "KVCache", "UserError", "convert", "generate", "generate_text", "load_model", "load_tokenizer",
           "preset_config", "save_model"]
