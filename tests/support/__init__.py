"""Helpers shared by the tests and the benchmarks (bench/): the local stack and its isolated corners, topic readers, Avro."""
