"""Model shapes of the benchmarks: a Qwen2.5-0.5B-shaped random model for the one-GPU
ones, tiny shapes for their CPU smoke runs (`--tiny`), and the shapes `lora.py` counts
(Qwen2.5-7B, on the meta device) and trains on CPU (SMALL)."""

QWEN25_05B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
)
# head_dim 64, as vLLM's CPU attention needs for the project's own tiny models
TINY = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    intermediate_size=512,
    vocab_size=1024,
)
QWEN25_7B = dict(  # Qwen/Qwen2.5-7B-Instruct's config.json
    hidden_size=3584,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    intermediate_size=18944,
    vocab_size=152064,
    tie_word_embeddings=False,
)
SMALL = dict(
    hidden_size=512,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    intermediate_size=1408,
    vocab_size=1024,
)
