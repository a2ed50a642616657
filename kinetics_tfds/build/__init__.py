"""How a build runs: the per-clip function over a worker pool or Beam, the shards, the claim, the skipped clips.

`kinetics_tfds.builder` says what an example is and which clips a build holds; `runner.ClipBuilder`, its base
class, runs them. Every TFDS internal the package relies on is imported in this folder only (`shards`: TFDS's key
hashing and shard boundaries; `local`: its writer and serializer), and tested with the tensorflow-datasets range
pinned in requirements.txt. Nothing here imports the builder, the input pipeline or training.
"""
