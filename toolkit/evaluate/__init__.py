"""``toolkit evaluate``: few-shot episodes, the evaluate job, its tables and plots."""
