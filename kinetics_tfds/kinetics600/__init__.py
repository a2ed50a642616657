"""Kinetics-600 TFDS folder."""
