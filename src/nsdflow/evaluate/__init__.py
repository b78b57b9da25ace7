"""The evaluate stage: the organisers' scores (:mod:`.scoring`), per-vertex scores of a model on a
hemisphere (:mod:`.score`) and the leaderboard's tables (:mod:`.summary`); commands in :mod:`.commands`."""
