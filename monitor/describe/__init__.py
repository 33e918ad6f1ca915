"""Stage 3, describe: `base.Describer.describe(candidates) -> [Description]` turns settled changes
into one sentence each. `embedded` (geometry + HOG, no weights) and `vlm` (the `pipelines`
change captioner) implement it, with the words of `phrases`; `factory.build_describer` picks
one from the settings."""
