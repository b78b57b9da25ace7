"""The features stage: the image index and uint8 image cache (:mod:`.images`), then backbone
feature extraction into resumable, shardable Zarr stores.

:mod:`.backbones` (the registry), :mod:`.pooling`, :mod:`.preflight` (each backbone built and run
on one image before any extraction), :mod:`.extract` (the extraction loop, needs torch),
:mod:`.chunks` (chunked stores: spec check, done flags, locking; no torch), :mod:`.combine` (the
combine step; no torch) and :mod:`.store` (reading; no torch); commands in :mod:`.commands`.
Import the submodule you need.
"""
