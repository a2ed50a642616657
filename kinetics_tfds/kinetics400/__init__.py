"""Kinetics-400 TFDS folder."""
