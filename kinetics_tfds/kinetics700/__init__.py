"""Kinetics-700 TFDS folder."""
