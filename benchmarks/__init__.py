"""Benchmarks of the solution modules and of the grader (``make bench``); not tests."""
