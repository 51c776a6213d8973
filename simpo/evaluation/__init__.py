"""Measuring a trained policy: preference metrics, generation for benchmarks, reward-model judging, reports."""
