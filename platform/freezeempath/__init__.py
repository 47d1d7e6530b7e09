"""FreezeEmpath: empathetic spoken chat on a frozen LLM — training (Ray Train + DeepSpeed) and serving (Ray Serve).

Importing the package pulls in no heavy dependency; import the submodules you need.
"""

__version__ = "0.1.0"
