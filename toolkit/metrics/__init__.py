"""Numbers computed on embeddings: classification (kNN, prototypes), verification, similarity, the kNN monitor."""
