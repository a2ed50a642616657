"""Kinetics-700-2020 TFDS folder."""
