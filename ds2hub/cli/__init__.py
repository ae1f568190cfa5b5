"""The `ds2hub` console script: LightningCLI's fit/validate/test/predict and the other verbs, each
a thin wrapper over the public API."""
