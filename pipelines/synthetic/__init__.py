"""Generated slides and MR series for the demo, the tests and model training (never patient data)."""
