"""Hollow engines: a simulator of the part of the Docker Engine API Berth uses, many in one
process, for measuring Berth at fleet scale (like kubemark's hollow nodes). Functional tests
run on real engines; this is a scale instrument."""
