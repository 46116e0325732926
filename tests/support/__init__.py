"""Rigs and helpers the tests and the bench share; no test module imports another one."""
