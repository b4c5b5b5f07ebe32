"""Place-recognition evaluation: Recall@N, precision–recall, plots, and the `eval` pipeline."""
