"""Random-weight models built from configs, for machines with no model weights (the GPU check).

A byte-level BPE tokenizer is trained in memory on a few arithmetic texts (so digits, ``\\n`` and
the PRM's ``<extra_0>`` separator exist), with a small chat template; the policy is a Llama
causal LM and the PRM a Llama token classifier read with the ``qwen25-math-prm`` protocol.
Sizes are named presets; the outputs are random text, which is all a throughput check needs.
"""
from __future__ import annotations

from pathlib import Path

SIZES = {
    # name: (hidden, layers, heads, kv_heads, intermediate) -> about the parameter count named
    "tiny": (64, 2, 4, 2, 128),
    "0.1b": (512, 12, 8, 4, 1536),
    "0.5b": (1024, 20, 16, 4, 3584),
    "1.5b": (1536, 28, 12, 2, 8960),
}
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]


def build_tokenizer(vocab_size: int = 2048):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [f"What is {a} + {b}? {a} + {b} = {a + b}.\nThe final answer is \\boxed{{{a + b}}}." for a in range(40) for b in range(40)]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>", "<extra_0>"])
    tok.chat_template = TEMPLATE
    return tok


def build_models(root: str | Path, size: str = "0.5b", prm_size: str = "0.1b", seed: int = 0) -> dict[str, Path]:
    """Write ``root/policy`` (causal LM) and ``root/prm`` (token classifier), each with the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    root = Path(root)
    tok = build_tokenizer()
    out = {}
    for name, cls, which in (("policy", LlamaForCausalLM, size), ("prm", LlamaForTokenClassification, prm_size)):
        hidden, layers, heads, kv, inter = SIZES[which]
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
            tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            bos_token_id=None, num_labels=2,
        )
        folder = root / name
        cls(config).save_pretrained(folder)
        tok.save_pretrained(folder)
        out[name] = folder
    return out
