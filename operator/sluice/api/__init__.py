"""The InferenceService API: spec types, parsing and the generated CRD."""
