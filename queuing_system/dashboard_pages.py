"""rq-dashboard's pages as the lessons show them: everything from Redis shown as text, each job's
progress and failure reason in the job lists, and a banner that says when Redis is away.

rq-dashboard 0.9.0 (the newest release) renders job fields, queue and worker names with
underscore's raw `<%= %>`: markup in a job's meta or description, or in a queue name anyone
could write into Redis, runs as script in the dashboard's origin. `EscapingLoader` serves its
templates with every interpolation escaped (`<%- %>`), so nothing from Redis is markup.

Its scripts are Jinja templates too, included into the pages' <script> element, where Flask does
not escape at all (a `.js` name turns autoescaping off) and HTML escaping would not help: jobs.js
put the queue name from the page's URL into `$(this).val('{{ queue.name }}')`, so a link could run
script with the page's own CSRF token (and so could a queue of that name in RQ's set of queues).
`EscapingLoader` also makes every `{{ }}` in those scripts a JS literal (`tojson`, which escapes
quotes and `<`), so any queue name, real ones with ':' included, is one string there.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from jinja2 import BaseLoader, Environment

TEMPLATE_FOLDER = "rq_dashboard/"
JOBS_TEMPLATE = TEMPLATE_FOLDER + "jobs.html"

# rq-dashboard escapes a few fields itself, by hand: unwrapped, so they are not escaped twice.
_HAND_ESCAPED = re.compile(r"""\$\('<div/>'\)\.text\((.*?)\)\.html\(\)""")
RAW = "<%="
ESCAPED = "<%-"

# The templates whose text ends up inside a <script> element (included there by base.html and the pages).
SCRIPT_TEMPLATES = re.compile(r"rq_dashboard/(scripts/.*\.js|inline_js\.html)")
# A `{{ value }}` in a script, with the quotes around it if it had a pair (the literal brings its own).
_SCRIPT_VALUE = re.compile(r"""(['"]?)\{\{\s*(.*?)\s*\}\}\1""")

# Added to each row of rq-dashboard's job lists, under the job's description (escaped like the rest).
PROGRESS_ROW = """
                <% if (d.progress !== null && d.progress !== undefined) { %>
                <div class="progress" style="height: 1.1rem; margin: 4px 0;" title="progress">
                  <div class="progress-bar <%- {failed: 'bg-danger', finished: 'bg-success'}[d.status]
                                               || 'progress-bar-striped progress-bar-animated' %>"
                       role="progressbar" style="width: <%- Math.max(0, Math.min(100, Number(d.progress) || 0)) %>%"
                       ><%- d.progress %>%</div>
                </div>
                <% } %>
                <span class="badge badge-secondary"><%- d.status %></span>
                <% if (d.error) { %><span class="text-danger"><%- d.error %></span><% } %>
"""
ROW_ANCHOR = """<span class="description ellipsify"><%- d.description %></span>"""


def escaped(source: str) -> str:
    """An rq-dashboard template with every underscore interpolation HTML-escaped."""
    return _HAND_ESCAPED.sub(r"\1", source).replace(RAW, ESCAPED)


def _as_literal(value: re.Match[str]) -> str:
    expression = value.group(2)
    if "|tojson" in expression.replace(" ", ""):
        return value.group(0)  # rq-dashboard made it a literal itself
    return "{{ (" + expression + ")|tojson }}"


def script_values_as_literals(source: str) -> str:
    """A script template with every `{{ value }}` a JS literal (see the module docstring)."""
    return _SCRIPT_VALUE.sub(_as_literal, source)


class EscapingLoader(BaseLoader):
    """rq-dashboard's templates, escaped (see the module docstring), with our progress row in the job lists."""

    def __init__(self, inner: BaseLoader) -> None:
        self.inner = inner

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.inner.get_source(environment, template)
        if template.startswith(TEMPLATE_FOLDER):
            source = escaped(source)
            if SCRIPT_TEMPLATES.fullmatch(template):
                source = script_values_as_literals(source)
            if template == JOBS_TEMPLATE:  # a newer rq-dashboard without the anchor: its own rows, unchanged
                source = source.replace(ROW_ANCHOR, ROW_ANCHOR + PROGRESS_ROW)
        return source, filename, uptodate

    def list_templates(self) -> list[str]:
        return self.inner.list_templates()


# Added to rq-dashboard's pages. A poll answered 503 (see dashboard.py) means Redis is away; a poll cut
# short (status 0: a reload, a navigation, a timeout of the browser's) says nothing about Redis.
PAGE_END = """<script>
$(document).ajaxError(function (event, xhr) {
  if (xhr.status === 503) { $('#redis-away').show(); }
  if (xhr.status === 403) { $('#stale-page').show(); }
});
$(document).ajaxSuccess(function () { $('#redis-away').hide(); });
</script>
<div id="redis-away" class="alert alert-danger" style="display: none; position: fixed; top: 0; width: 100%;">
Redis is not reachable: showing what was last seen, trying again.</div>
<div id="stale-page" class="alert alert-warning" style="display: none; position: fixed; top: 0; width: 100%;">
This page is out of date (the dashboard restarted): reload it to use its buttons.</div>
</body>"""


def with_additions(page: str, token_script: str) -> str:
    """An rq-dashboard page with its CSRF token for `$.ajax` and the banners above."""
    return page.replace("</body>", token_script + PAGE_END, 1)
