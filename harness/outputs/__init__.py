"""What a run writes: KTAP, JUnit, results.json (run_files), report.html with its
timelines, from the templates in outputs/templates/ (one jinja2 environment).
"""
