"""Export formats beyond one answer per sample: preference pairs for DPO (:mod:`.dpo`)."""
