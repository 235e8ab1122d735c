"""Export a checkpoint and load what was exported.

Export (``toolkit export``): ``export_options`` checks the options, ``export_steps`` runs the steps in
order (ONNX with its parity gate, int8 with its gate, TensorRT engine, Triton repository), each
writing the file names ``export_folder`` owns; ``metadata`` is what a deployed model carries besides
its weights. Load: ``model_files`` picks the file a model path and backend mean, ``runtime`` opens it
behind one ``Backend`` interface (torch, ONNX Runtime, OpenVINO, TensorRT). What a loaded model is
used for (scoring pairs, galleries, indexes) is the ``scoring`` package's.

Module names never repeat an installed package's (``onnx_export``, not ``onnx``): run none of them as
a script, since their folder first on ``sys.path`` would shadow that package.
"""
