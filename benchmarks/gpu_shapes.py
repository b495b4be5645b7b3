"""Model shapes of the one-GPU benchmarks: a Qwen2.5-0.5B-shaped random model, and tiny
shapes for their CPU smoke runs (`--tiny`)."""

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
