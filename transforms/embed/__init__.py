"""The embed stage: image (and caption) embeddings of figure samples (see pipelines/embed.py).

torch_shim: torchvision importable on CPU torch; pixels: the weight-free pixels-v1
descriptor; models: --model/--weights and loading (`load_embedder`); handlers: the
RunInference model handler; files: figure files in, embeddings files out; stage: the
EmbedFigures PTransform; accelerator: --accelerator, the stage's GPU resource hint.
"""
