"""Data sets: annotation files to records (one module per format) and records to batches."""
