"""Run summaries, tables and plots."""
