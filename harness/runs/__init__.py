"""The commands on top of the pipeline: a boot-test run, offline parsing of a saved
console, diff, the matrix; and the VMMs a run can drive (vmms/).
"""
