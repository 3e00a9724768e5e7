"""A path to a lab: matrix cells as LAVA jobs, and LAVA's logs judged by our own verdict.

lava-export writes, per cell, a LAVA job (device type qemu; jinja2 template
harness/outputs/templates/lava-job.yaml.j2) that deploys the cell's kernel and initramfs
from --artifact-url to tmpfs, boots them with the machine's QEMU arguments
(context: machine, cpu, memory, extra_options) and watches the console with
a monitor test action: one LAVA test case per guest test, from the VMM's
`end` record. The kernel command line carries vtimer.cell/rev/policy/machine
(dotted, so Linux ignores them), so a console log names its own cell. Under
--out: jobs/<cell>.yaml, artifacts/ (the initramfs of each cell; with
--with-kernels the kernels too) and artifacts.json (what to upload where).

lava-ingest takes the job's log as LAVA stores it (the server's YAML/JSON job log,
a list of {dt, lvl, msg}, or lava-run's own, a {dt, lvl, msg} a line: the lvl
'target' lines are the console, its '"' unescaped) or a raw console log, and
runs our record parser and the revision's model over it, exactly as a local run
would: results/<run-id>/ gets results.json, junit.xml,
ktap.txt, report.html. Layer 0 (QEMU's trace) does not exist in a lab.

Validation: LAVA's own schema (lava_common.schemas.validate). lava-common is
not on PyPI; Debian packages it (lava-common, bookworm 2023.01), so
lava_common_path() fetches it like the prebuilt kernels (apt-get download,
dpkg-deb -x into build/lava-common/) and imports it from there; its one
dependency, voluptuous, comes from PyPI (pyproject's lava/dev extras).

Modules: export (jobs and their artifacts), schema (LAVA's own validation),
ingest (a job's log judged by our session), lavarun (LAVA's own dispatcher,
Debian's lava-dispatcher, running a job on LAVA's own qemu device type: the
template from Debian's lava-server, unpacked into build/lava-server/, rendered with
the job's context; to check an exported job end to end without a lab).
"""
