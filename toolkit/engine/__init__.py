"""The machinery every training command shares: the loop, checkpoint, run folder, schedule, precision, distributed."""
