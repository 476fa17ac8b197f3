"""Profiles: deep features per tile, aggregated to image, well and treatment (pycytominer
style), normalised against the controls."""
