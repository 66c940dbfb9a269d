"""Video LVLM backends: loading transformers models, tiny models for tests, chat-template inputs.

- :mod:`llava_star.models.loading`: ``load_model(name_or_path, ...) -> LoadedModel``
- :mod:`llava_star.models.inputs`: ``build_inputs(processor, conversations, videos, ...)``,
  shared by generation and training
- :mod:`llava_star.models.tiny`: ``build_tiny_model(family, out_dir)`` and ``llava-star tiny-model``
"""
