"""Data: pre-decoded TFRecord datasets, synthetic data, dataset preparation, clip ops and the input pipeline."""
