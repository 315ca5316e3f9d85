"""Offline evaluation: feature networks, distances between feature sets, classifier scores."""
