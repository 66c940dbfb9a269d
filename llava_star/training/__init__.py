"""What the train stage (:mod:`llava_star.stages.train`) is built from.

``config`` (TrainConfig and its flags), ``data`` and ``data_lists`` (records, the
conversation dataset, collator and sampler), ``parts`` (vision tower, projector, language
model: which train, at which rate), ``lora``, ``deepspeed``, ``precision`` (dtypes and the
memory estimate), ``trainer`` (TrainingArguments and the Trainer; imports transformers),
``checkpoints`` (the saved model) and ``resume``.
"""
