"""Computation: whole-slide CTC/CTM detection, MRI tumour analysis, synthetic data and model registry."""
