"""Where images come from and how they reach a model: sources, the decoded store, augmentation, loaders, sampling."""
