"""Benchmarks: ``edgeinfer bench`` measures the agent side by side with what it competes with.

Every ratio is measured in one run on one machine: the same model, the same messages, the
same threads, one agent pinned to one core. See docs/benchmarks.md.
"""
