"""Putting results on disk and on the page: writers, plots and (later) the HTML report."""
