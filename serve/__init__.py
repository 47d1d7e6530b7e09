"""Ray Serve app of the FreezeEmpath platform: OpenAI-compatible gateway over the pipeline deployments.

Run from the repository root::

    serve run --address local serve/configs/local.yaml
"""
