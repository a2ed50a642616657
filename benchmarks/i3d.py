"""The training command from a checkout: `python benchmarks/i3d.py --tpu=local` is `python -m kinetics_tfds.train`.

See kinetics_tfds/train.py for what it does and `--help` for its flags.
"""

from kinetics_tfds import train

if __name__ == "__main__":
  train.run_main()
