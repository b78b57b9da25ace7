"""Backbone feature extraction into resumable, shardable Zarr stores.

:mod:`.backbones` (the registry), :mod:`.pooling`, :mod:`.extract` (the extraction loop, needs
torch), :mod:`.chunks` (chunked stores: spec check, done flags, locking; no torch),
:mod:`.combine` (the combine step; no torch) and :mod:`.store` (reading; no torch). Import the
submodule you need.
"""
