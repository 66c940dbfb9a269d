"""What the train stage is built from: the conversation dataset, collator and sampler."""
