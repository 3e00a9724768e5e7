"""The ground every stage stands on: errors, the repo's paths, YAML with line numbers,
signals, locks, cache stamps, atomic result files, and the status enums.
"""
