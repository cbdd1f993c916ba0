"""Runs as pages, the API and the CLI see them: queries, operator actions, figures."""
