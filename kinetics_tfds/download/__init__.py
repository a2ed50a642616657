"""Fills a TFDS manual folder with Kinetics clips from the CVDF mirror or YouTube.

Run as `python -m kinetics_tfds.download --help`. Every run is resumable and writes
`download_report.csv` into the manual folder, so a rerun only fetches what is missing.
"""

# Below the manual folder: partial downloads, cached lists and done-markers. Its files never match
# the clip name pattern, so builders scanning the folder do not see them.
STATE_DIR = ".download_state"
