"""Stand-in Cloudreve v4 server for tests, the demo and benchmarks."""
