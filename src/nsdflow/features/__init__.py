"""Backbone feature extraction into resumable Zarr stores.

:mod:`.backbones` (the registry), :mod:`.pooling`, :mod:`.extract` (the extraction loop, needs
torch) and :mod:`.store` (reading, no torch). Import the submodule you need.
"""
