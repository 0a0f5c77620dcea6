"""pytest-benchmark suites per op and end-to-end scripts.

`benchmarks.machine` measures the machine's own rates, so throughput is reported against them.
"""
