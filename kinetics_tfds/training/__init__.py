"""Training and evaluating the Keras I3D on Kinetics, on CPU, GPUs or TPUs and the TensorFlow or JAX backend.

`config` holds a run's settings (each with its flag's help), `placement` picks the devices, `cluster` the processes
(what each reads, gathers and writes), `optimization` the optimizer, schedule, loss and precision, `loop` runs fit and
per-video evaluation, `synthetic` feeds device-resident clips, and `run` composes them for
`python -m kinetics_tfds.train` and `python -m kinetics_tfds`. Only `datasets` (and `run` when it reads real data)
imports TensorFlow, so the JAX backend trains on synthetic clips on a machine without it.
"""
