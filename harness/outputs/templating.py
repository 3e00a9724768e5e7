"""The one jinja2 environment for every template in outputs/templates/.

Undefined names are errors (StrictUndefined). HTML and SVG templates are
autoescaped; the LAVA job (YAML) is not, and every value in it goes through the
q filter (JSON's quoting is valid YAML). Block tags take their line with them
(trim_blocks, lstrip_blocks), and a file's last newline stays. jinja2 is
imported on first use: a boot-test's start does not wait for it.
"""

from __future__ import annotations

import functools
import json


def yaml_quote(value) -> str:
    """A YAML scalar for any string: JSON's quoting is valid YAML."""
    return json.dumps(value)


@functools.cache
def env():
    """The environment (made once)."""
    import jinja2

    e = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.outputs", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "svg.j2"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    e.filters["q"] = yaml_quote
    return e


def render(template: str, **context) -> str:
    """outputs/templates/<template> with context."""
    return env().get_template(template).render(**context)
