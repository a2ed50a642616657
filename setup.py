"""kinetics_tfds: TFDS builders, an input pipeline and I3D for DeepMind's Kinetics datasets."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent
_REQUIREMENTS = [
  line.strip()
  for line in (_HERE / "requirements.txt").read_text().splitlines()
  if line.strip() and not line.startswith("#")
]

setuptools.setup(
  name="kinetics_tfds",
  version="0.1.0",
  description="TFDS builders, a fast tf.data pipeline and a Keras I3D for Kinetics-400/600/700/700-2020.",
  long_description=(_HERE / "README.md").read_text(),
  long_description_content_type="text/markdown",
  python_requires=">=3.11",
  packages=setuptools.find_packages(include=["kinetics_tfds", "kinetics_tfds.*"]),
  package_data={
    "kinetics_tfds": [
      "*/README.md",
      "*/CITATIONS.bib",
      "*/TAGS.txt",
      "*/checksums.tsv",
      "*/dummy_data/**/*",
    ],
  },
  include_package_data=True,
  install_requires=_REQUIREMENTS,
  entry_points={
    "console_scripts": [
      "kinetics-demo = kinetics_tfds.__main__:run_main",
      "kinetics-download = kinetics_tfds.download.__main__:run_main",
      "kinetics-overlap = kinetics_tfds.overlap:run_main",
      "kinetics-report = kinetics_tfds.report:run_main",
      "kinetics-train = kinetics_tfds.train:run_main",
    ],
  },
  extras_require={
    # Manual folders (clips, annotations) on object storage; fsspec picks the file system by URL.
    "gcs": ["gcsfs>=2024.6"],
    "s3": ["s3fs>=2024.6"],
    # Grain, JAX's data loader, for kinetics_tfds.loaders.grain_train and kinetics-train --loader=grain.
    "grain": ["grain>=0.2.18"],
    # moto's server and gcp-storage-emulator are the loopback S3 and GCS the object-storage builds are
    # tested against.
    "test": [
      "pytest>=8",
      "pytest-xdist>=3",
      "h5py>=3",  # Reads Keras weights files (Keras requires it too).
      "jax[cpu]>=0.10",
      "grain>=0.2.18",
      "dill",
      "imageio-ffmpeg>=0.5",
      "s3fs>=2024.6",
      "moto[server]>=5",
      "gcsfs>=2024.6",
      "gcp-storage-emulator>=2024.8",
      "ruff==0.17.6",  # Pinned: another version may format differently, and CI checks the format.
    ],
  },
)
