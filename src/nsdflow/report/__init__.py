"""The report stage: the scores page (:mod:`.html`), the figures (:mod:`.plots`, :mod:`.brainmap`)
and the run's provenance (:mod:`.provenance`); commands in :mod:`.commands`."""
