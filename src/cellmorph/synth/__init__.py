"""Synthetic plates in the real dataset layouts, for demos and tests. Always labelled synthetic."""
