"""Galleries of millions: a sharded embedding store and a faiss index over it (``toolkit index``).

* ``fingerprint``: what identifies a model's embedding space (graph or weights + preprocessing);
* ``store``: float32 ``.npy`` shards + their paths, written resumably, one shard at a time;
* ``faiss_index``: flat / IVF / HNSW / IVF-PQ indexes over l2-normalised vectors (cosine);
* ``store_files``: the folder's files read as untrusted input (one line naming a damaged file and its repair);
* ``job``: ``toolkit index build|add|info``, under the run folders' lock; ``run``: the model side of build and
  add (one ``scoring.session``); ``search``: the search of ``toolkit score --index`` (``scoring.modes.index_mode``).
"""
