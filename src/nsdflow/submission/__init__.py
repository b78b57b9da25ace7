"""The submission stage: the challenge's zip, assembled and checked the way the leaderboard would
(:mod:`.archive`); commands in :mod:`.commands`."""
