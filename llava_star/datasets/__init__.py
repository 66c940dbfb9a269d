"""Dataset adapters: one module per dataset, each turning annotations into Samples."""
