"""The pipeline's stages, one module each, declared once in `a2tgpo.stages.contract`.

Each stage function takes the config and URIs (never half-prepared local state),
returns the committed manifest, and returns an already committed output as is. Stage
modules import the library's lower layers (algo, data, envs, engines, rollout,
scoring, training) and never each other.
"""
