"""The benchmark behind `make bench`: our sync engine against raw IMAP clients, same run.

A benchmark is not a test: it prints figures and ratios measured in one run on
one machine and asserts nothing about time. See bench/README.md.
"""
